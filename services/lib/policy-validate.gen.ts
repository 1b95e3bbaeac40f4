// Generated from policy.schema.json by `make schema` (iso/policy-validator.ts): do not edit.
// test/policy-schema.test.ts fails when this file no longer matches the schema.
// @ts-nocheck
import type { ValidateFunction } from 'ajv';
import schema0 from './policy.schema.json' with { type: 'json' };
const schema13 = {"type":"object","additionalProperties":false,"required":["subject"],"properties":{"subject":{"type":"string","pattern":"^verify(\\.[A-Za-z0-9_-]+)+$","patternErrorMessage":"a subject under verify., like verify.image.cosign","description":"The bus subject the plugin answers on, like verify.image.cosign."},"required":{"type":"boolean","default":true,"description":"true: a deny, a timeout or an absent plugin blocks the image; false: an absent or silent plugin is noted and does not block (a deny still does)."},"timeoutMs":{"type":"integer","minimum":1,"maximum":60000,"default":2000,"description":"How long to wait for the answer, in milliseconds."}}};
const func0 = Object.prototype.hasOwnProperty;
const schema1 = {"type":"object","additionalProperties":false,"required":["id","ed25519"],"properties":{"id":{"$ref":"#/definitions/keyId"},"ed25519":{"type":"string","pattern":"^[A-Za-z0-9+/]{43}=$","patternErrorMessage":"must be a base64 ed25519 public key of 32 bytes (44 characters ending in =), like the ed25519 line of a .pub file from \"sealkit keygen\"","description":"The raw 32-byte Ed25519 public key, base64: the ed25519 line of a .pub file from \"sealkit keygen\"."}}};
const schema2 = {"type":"string","pattern":"^[a-z0-9][a-z0-9._-]{0,63}$","patternErrorMessage":"a key id is 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit","description":"A key id, like release-2026."};
const pattern0 = new RegExp("^[a-z0-9][a-z0-9._-]{0,63}$", "u");
const pattern1 = new RegExp("^[A-Za-z0-9+/]{43}=$", "u");

function validate1(data, {instancePath="", parentData, parentDataProperty, rootData=data}={}){
let vErrors = null;
let errors = 0;
if(errors === 0){
if(data && typeof data == "object" && !Array.isArray(data)){
let missing0;
if((((data.id === undefined) || (!(func0.call(data, "id")))) && (missing0 = "id")) || (((data.ed25519 === undefined) || (!(func0.call(data, "ed25519")))) && (missing0 = "ed25519"))){
validate1.errors = [{instancePath,schemaPath:"#/required",keyword:"required",params:{missingProperty: missing0},message:"must have required property '"+missing0+"'",schema:schema1.required,parentSchema:schema1,data}];
return false;
}
else {
const _errs1 = errors;
for(const key0 of Object.keys(data)){
if(!((key0 === "id") || (key0 === "ed25519"))){
validate1.errors = [{instancePath,schemaPath:"#/additionalProperties",keyword:"additionalProperties",params:{additionalProperty: key0},message:"must NOT have additional properties",schema:false,parentSchema:schema1,data}];
return false;
break;
}
}
if(_errs1 === errors){
if(data.id !== undefined && func0.call(data, "id")){
let data0 = data.id;
const _errs2 = errors;
const _errs3 = errors;
if(errors === _errs3){
if(typeof data0 === "string"){
if(!pattern0.test(data0)){
validate1.errors = [{instancePath:instancePath+"/id",schemaPath:"#/definitions/keyId/pattern",keyword:"pattern",params:{pattern: "^[a-z0-9][a-z0-9._-]{0,63}$"},message:"must match pattern \""+"^[a-z0-9][a-z0-9._-]{0,63}$"+"\"",schema:"^[a-z0-9][a-z0-9._-]{0,63}$",parentSchema:schema2,data:data0}];
return false;
}
}
else {
validate1.errors = [{instancePath:instancePath+"/id",schemaPath:"#/definitions/keyId/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema2.type,parentSchema:schema2,data:data0}];
return false;
}
}
var valid0 = _errs2 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.ed25519 !== undefined && func0.call(data, "ed25519")){
let data1 = data.ed25519;
const _errs5 = errors;
if(errors === _errs5){
if(typeof data1 === "string"){
if(!pattern1.test(data1)){
validate1.errors = [{instancePath:instancePath+"/ed25519",schemaPath:"#/properties/ed25519/pattern",keyword:"pattern",params:{pattern: "^[A-Za-z0-9+/]{43}=$"},message:"must match pattern \""+"^[A-Za-z0-9+/]{43}=$"+"\"",schema:"^[A-Za-z0-9+/]{43}=$",parentSchema:schema1.properties.ed25519,data:data1}];
return false;
}
}
else {
validate1.errors = [{instancePath:instancePath+"/ed25519",schemaPath:"#/properties/ed25519/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema1.properties.ed25519.type,parentSchema:schema1.properties.ed25519,data:data1}];
return false;
}
}
var valid0 = _errs5 === errors;
}
else {
var valid0 = true;
}
}
}
}
}
else {
validate1.errors = [{instancePath,schemaPath:"#/type",keyword:"type",params:{type: "object"},message:"must be object",schema:schema1.type,parentSchema:schema1,data}];
return false;
}
}
validate1.errors = vErrors;
return errors === 0;
}

const schema3 = {"type":"object","additionalProperties":false,"required":["name","tag","source","sha256"],"properties":{"name":{"type":"string","pattern":"^[a-z0-9]+([._/-][a-z0-9]+)*$","patternErrorMessage":"lowercase path components like \"library/alpine\"","description":"The image name it is imported as, like library/alpine; each name appears once."},"tag":{"type":"string","pattern":"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$","patternErrorMessage":"up to 128 of A-Z a-z 0-9 _ . -","description":"The tag it is imported as. Quote tags YAML would read as numbers: tag: \"1\"."},"source":{"type":"string","description":"Where the node fetches it: https://…, http://… (only with allowHttp: true), file:///path, or oci://host[:port]/repository@sha256:<64 hex> (the digest equal to sha256)."},"sha256":{"$ref":"#/definitions/sha256"},"size":{"type":"integer","minimum":1,"maximum":9007199254740991,"description":"Bytes; reading stops past it."},"allowHttp":{"type":"boolean","default":false,"description":"Allow a plain http:// source for this image."},"redirects":{"type":"object","additionalProperties":false,"description":"Redirects the fetch may follow.","properties":{"max":{"type":"integer","minimum":0,"maximum":10,"default":3,"description":"How many redirects to follow, 0 to 10."},"hosts":{"type":"array","default":[],"description":"Hosts a redirect may lead to.","items":{"type":"string","pattern":"^[A-Za-z0-9.-]+(:\\d+)?$","patternErrorMessage":"a host name, optionally with :port"}}}},"signatures":{"type":"object","additionalProperties":false,"required":["keys"],"description":"N of M signatures over the image, made with \"sealkit sign-image\"; the file is <source>.sig unless url names another (an oci:// source needs url).","properties":{"keys":{"type":"array","minItems":1,"items":{"$ref":"#/definitions/keyId"},"errorMessage":"must list at least one id of a key under keys:","description":"Ids of keys under keys: whose signatures count."},"threshold":{"type":"integer","minimum":1,"maximum":9007199254740991,"default":1,"description":"How many of the keys must have signed; at most the number of keys."},"url":{"type":"string","pattern":"^(https?|file)://","patternErrorMessage":"an https://, http:// or file:// URL","description":"Where the signature file is, instead of <source>.sig; required for an oci:// source."}}},"import":{"type":"object","additionalProperties":false,"description":"Where the verified image is imported.","properties":{"containerd":{"anyOf":[{"const":false},{"$ref":"#/definitions/containerdTarget"}],"default":{"namespace":"services.linuxkit"},"errorMessage":"must be false (no containerd import) or a mapping like {namespace: services.linuxkit}","description":"false, or the containerd namespace to import into."},"docker":{"type":"boolean","default":false,"description":"Also load it into Docker."}}}}};
const schema4 = {"type":"string","pattern":"^[0-9a-f]{64}$","patternErrorMessage":"give the 64 lowercase hex characters of the SHA-256","description":"SHA-256 in 64 lowercase hex characters: of the archive for a URL source (sha256sum FILE), of the manifest for an oci:// source."};
const schema6 = {"type":"object","additionalProperties":false,"properties":{"namespace":{"type":"string","pattern":"^[A-Za-z0-9][A-Za-z0-9._-]*$","patternErrorMessage":"a containerd namespace: letters, digits, '.', '_' or '-', starting with a letter or digit","default":"services.linuxkit","description":"The containerd namespace."}}};
const pattern2 = new RegExp("^[a-z0-9]+([._/-][a-z0-9]+)*$", "u");
const pattern3 = new RegExp("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", "u");
const pattern4 = new RegExp("^[0-9a-f]{64}$", "u");
const pattern5 = new RegExp("^[A-Za-z0-9.-]+(:\\d+)?$", "u");
const pattern7 = new RegExp("^(https?|file)://", "u");
const pattern8 = new RegExp("^[A-Za-z0-9][A-Za-z0-9._-]*$", "u");

function validate3(data, {instancePath="", parentData, parentDataProperty, rootData=data}={}){
let vErrors = null;
let errors = 0;
if(errors === 0){
if(data && typeof data == "object" && !Array.isArray(data)){
let missing0;
if((((((data.name === undefined) || (!(func0.call(data, "name")))) && (missing0 = "name")) || (((data.tag === undefined) || (!(func0.call(data, "tag")))) && (missing0 = "tag"))) || (((data.source === undefined) || (!(func0.call(data, "source")))) && (missing0 = "source"))) || (((data.sha256 === undefined) || (!(func0.call(data, "sha256")))) && (missing0 = "sha256"))){
validate3.errors = [{instancePath,schemaPath:"#/required",keyword:"required",params:{missingProperty: missing0},message:"must have required property '"+missing0+"'",schema:schema3.required,parentSchema:schema3,data}];
return false;
}
else {
const _errs1 = errors;
for(const key0 of Object.keys(data)){
if(!(func0.call(schema3.properties, key0))){
validate3.errors = [{instancePath,schemaPath:"#/additionalProperties",keyword:"additionalProperties",params:{additionalProperty: key0},message:"must NOT have additional properties",schema:false,parentSchema:schema3,data}];
return false;
break;
}
}
if(_errs1 === errors){
if(data.name !== undefined && func0.call(data, "name")){
let data0 = data.name;
const _errs2 = errors;
if(errors === _errs2){
if(typeof data0 === "string"){
if(!pattern2.test(data0)){
validate3.errors = [{instancePath:instancePath+"/name",schemaPath:"#/properties/name/pattern",keyword:"pattern",params:{pattern: "^[a-z0-9]+([._/-][a-z0-9]+)*$"},message:"must match pattern \""+"^[a-z0-9]+([._/-][a-z0-9]+)*$"+"\"",schema:"^[a-z0-9]+([._/-][a-z0-9]+)*$",parentSchema:schema3.properties.name,data:data0}];
return false;
}
}
else {
validate3.errors = [{instancePath:instancePath+"/name",schemaPath:"#/properties/name/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema3.properties.name.type,parentSchema:schema3.properties.name,data:data0}];
return false;
}
}
var valid0 = _errs2 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.tag !== undefined && func0.call(data, "tag")){
let data1 = data.tag;
const _errs4 = errors;
if(errors === _errs4){
if(typeof data1 === "string"){
if(!pattern3.test(data1)){
validate3.errors = [{instancePath:instancePath+"/tag",schemaPath:"#/properties/tag/pattern",keyword:"pattern",params:{pattern: "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"},message:"must match pattern \""+"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"+"\"",schema:"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",parentSchema:schema3.properties.tag,data:data1}];
return false;
}
}
else {
validate3.errors = [{instancePath:instancePath+"/tag",schemaPath:"#/properties/tag/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema3.properties.tag.type,parentSchema:schema3.properties.tag,data:data1}];
return false;
}
}
var valid0 = _errs4 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.source !== undefined && func0.call(data, "source")){
let data2 = data.source;
const _errs6 = errors;
if(typeof data2 !== "string"){
validate3.errors = [{instancePath:instancePath+"/source",schemaPath:"#/properties/source/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema3.properties.source.type,parentSchema:schema3.properties.source,data:data2}];
return false;
}
var valid0 = _errs6 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.sha256 !== undefined && func0.call(data, "sha256")){
let data3 = data.sha256;
const _errs8 = errors;
const _errs9 = errors;
if(errors === _errs9){
if(typeof data3 === "string"){
if(!pattern4.test(data3)){
validate3.errors = [{instancePath:instancePath+"/sha256",schemaPath:"#/definitions/sha256/pattern",keyword:"pattern",params:{pattern: "^[0-9a-f]{64}$"},message:"must match pattern \""+"^[0-9a-f]{64}$"+"\"",schema:"^[0-9a-f]{64}$",parentSchema:schema4,data:data3}];
return false;
}
}
else {
validate3.errors = [{instancePath:instancePath+"/sha256",schemaPath:"#/definitions/sha256/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema4.type,parentSchema:schema4,data:data3}];
return false;
}
}
var valid0 = _errs8 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.size !== undefined && func0.call(data, "size")){
let data4 = data.size;
const _errs11 = errors;
if(!(((typeof data4 == "number") && (!(data4 % 1) && !isNaN(data4))) && (isFinite(data4)))){
validate3.errors = [{instancePath:instancePath+"/size",schemaPath:"#/properties/size/type",keyword:"type",params:{type: "integer"},message:"must be integer",schema:schema3.properties.size.type,parentSchema:schema3.properties.size,data:data4}];
return false;
}
if(errors === _errs11){
if((typeof data4 == "number") && (isFinite(data4))){
if(data4 > 9007199254740991 || isNaN(data4)){
validate3.errors = [{instancePath:instancePath+"/size",schemaPath:"#/properties/size/maximum",keyword:"maximum",params:{comparison: "<=", limit: 9007199254740991},message:"must be <= 9007199254740991",schema:9007199254740991,parentSchema:schema3.properties.size,data:data4}];
return false;
}
else {
if(data4 < 1 || isNaN(data4)){
validate3.errors = [{instancePath:instancePath+"/size",schemaPath:"#/properties/size/minimum",keyword:"minimum",params:{comparison: ">=", limit: 1},message:"must be >= 1",schema:1,parentSchema:schema3.properties.size,data:data4}];
return false;
}
}
}
}
var valid0 = _errs11 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.allowHttp !== undefined && func0.call(data, "allowHttp")){
let data5 = data.allowHttp;
const _errs13 = errors;
if(typeof data5 !== "boolean"){
validate3.errors = [{instancePath:instancePath+"/allowHttp",schemaPath:"#/properties/allowHttp/type",keyword:"type",params:{type: "boolean"},message:"must be boolean",schema:schema3.properties.allowHttp.type,parentSchema:schema3.properties.allowHttp,data:data5}];
return false;
}
var valid0 = _errs13 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.redirects !== undefined && func0.call(data, "redirects")){
let data6 = data.redirects;
const _errs15 = errors;
if(errors === _errs15){
if(data6 && typeof data6 == "object" && !Array.isArray(data6)){
const _errs17 = errors;
for(const key1 of Object.keys(data6)){
if(!((key1 === "max") || (key1 === "hosts"))){
validate3.errors = [{instancePath:instancePath+"/redirects",schemaPath:"#/properties/redirects/additionalProperties",keyword:"additionalProperties",params:{additionalProperty: key1},message:"must NOT have additional properties",schema:false,parentSchema:schema3.properties.redirects,data:data6}];
return false;
break;
}
}
if(_errs17 === errors){
if(data6.max !== undefined && func0.call(data6, "max")){
let data7 = data6.max;
const _errs18 = errors;
if(!(((typeof data7 == "number") && (!(data7 % 1) && !isNaN(data7))) && (isFinite(data7)))){
validate3.errors = [{instancePath:instancePath+"/redirects/max",schemaPath:"#/properties/redirects/properties/max/type",keyword:"type",params:{type: "integer"},message:"must be integer",schema:schema3.properties.redirects.properties.max.type,parentSchema:schema3.properties.redirects.properties.max,data:data7}];
return false;
}
if(errors === _errs18){
if((typeof data7 == "number") && (isFinite(data7))){
if(data7 > 10 || isNaN(data7)){
validate3.errors = [{instancePath:instancePath+"/redirects/max",schemaPath:"#/properties/redirects/properties/max/maximum",keyword:"maximum",params:{comparison: "<=", limit: 10},message:"must be <= 10",schema:10,parentSchema:schema3.properties.redirects.properties.max,data:data7}];
return false;
}
else {
if(data7 < 0 || isNaN(data7)){
validate3.errors = [{instancePath:instancePath+"/redirects/max",schemaPath:"#/properties/redirects/properties/max/minimum",keyword:"minimum",params:{comparison: ">=", limit: 0},message:"must be >= 0",schema:0,parentSchema:schema3.properties.redirects.properties.max,data:data7}];
return false;
}
}
}
}
var valid2 = _errs18 === errors;
}
else {
var valid2 = true;
}
if(valid2){
if(data6.hosts !== undefined && func0.call(data6, "hosts")){
let data8 = data6.hosts;
const _errs20 = errors;
if(errors === _errs20){
if(Array.isArray(data8)){
var valid3 = true;
const len0 = data8.length;
for(let i0=0; i0<len0; i0++){
let data9 = data8[i0];
const _errs22 = errors;
if(errors === _errs22){
if(typeof data9 === "string"){
if(!pattern5.test(data9)){
validate3.errors = [{instancePath:instancePath+"/redirects/hosts/" + i0,schemaPath:"#/properties/redirects/properties/hosts/items/pattern",keyword:"pattern",params:{pattern: "^[A-Za-z0-9.-]+(:\\d+)?$"},message:"must match pattern \""+"^[A-Za-z0-9.-]+(:\\d+)?$"+"\"",schema:"^[A-Za-z0-9.-]+(:\\d+)?$",parentSchema:schema3.properties.redirects.properties.hosts.items,data:data9}];
return false;
}
}
else {
validate3.errors = [{instancePath:instancePath+"/redirects/hosts/" + i0,schemaPath:"#/properties/redirects/properties/hosts/items/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema3.properties.redirects.properties.hosts.items.type,parentSchema:schema3.properties.redirects.properties.hosts.items,data:data9}];
return false;
}
}
var valid3 = _errs22 === errors;
if(!valid3){
break;
}
}
}
else {
validate3.errors = [{instancePath:instancePath+"/redirects/hosts",schemaPath:"#/properties/redirects/properties/hosts/type",keyword:"type",params:{type: "array"},message:"must be array",schema:schema3.properties.redirects.properties.hosts.type,parentSchema:schema3.properties.redirects.properties.hosts,data:data8}];
return false;
}
}
var valid2 = _errs20 === errors;
}
else {
var valid2 = true;
}
}
}
}
else {
validate3.errors = [{instancePath:instancePath+"/redirects",schemaPath:"#/properties/redirects/type",keyword:"type",params:{type: "object"},message:"must be object",schema:schema3.properties.redirects.type,parentSchema:schema3.properties.redirects,data:data6}];
return false;
}
}
var valid0 = _errs15 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.signatures !== undefined && func0.call(data, "signatures")){
let data10 = data.signatures;
const _errs24 = errors;
if(errors === _errs24){
if(data10 && typeof data10 == "object" && !Array.isArray(data10)){
let missing1;
if(((data10.keys === undefined) || (!(func0.call(data10, "keys")))) && (missing1 = "keys")){
validate3.errors = [{instancePath:instancePath+"/signatures",schemaPath:"#/properties/signatures/required",keyword:"required",params:{missingProperty: missing1},message:"must have required property '"+missing1+"'",schema:schema3.properties.signatures.required,parentSchema:schema3.properties.signatures,data:data10}];
return false;
}
else {
const _errs26 = errors;
for(const key2 of Object.keys(data10)){
if(!(((key2 === "keys") || (key2 === "threshold")) || (key2 === "url"))){
validate3.errors = [{instancePath:instancePath+"/signatures",schemaPath:"#/properties/signatures/additionalProperties",keyword:"additionalProperties",params:{additionalProperty: key2},message:"must NOT have additional properties",schema:false,parentSchema:schema3.properties.signatures,data:data10}];
return false;
break;
}
}
if(_errs26 === errors){
if(data10.keys !== undefined && func0.call(data10, "keys")){
let data11 = data10.keys;
const _errs27 = errors;
if(errors === _errs27){
if(Array.isArray(data11)){
if(data11.length < 1){
validate3.errors = [{instancePath:instancePath+"/signatures/keys",schemaPath:"#/properties/signatures/properties/keys/minItems",keyword:"minItems",params:{limit: 1},message:"must NOT have fewer than 1 items",schema:1,parentSchema:schema3.properties.signatures.properties.keys,data:data11}];
return false;
}
else {
var valid5 = true;
const len1 = data11.length;
for(let i1=0; i1<len1; i1++){
let data12 = data11[i1];
const _errs29 = errors;
const _errs30 = errors;
if(errors === _errs30){
if(typeof data12 === "string"){
if(!pattern0.test(data12)){
validate3.errors = [{instancePath:instancePath+"/signatures/keys/" + i1,schemaPath:"#/definitions/keyId/pattern",keyword:"pattern",params:{pattern: "^[a-z0-9][a-z0-9._-]{0,63}$"},message:"must match pattern \""+"^[a-z0-9][a-z0-9._-]{0,63}$"+"\"",schema:"^[a-z0-9][a-z0-9._-]{0,63}$",parentSchema:schema2,data:data12}];
return false;
}
}
else {
validate3.errors = [{instancePath:instancePath+"/signatures/keys/" + i1,schemaPath:"#/definitions/keyId/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema2.type,parentSchema:schema2,data:data12}];
return false;
}
}
var valid5 = _errs29 === errors;
if(!valid5){
break;
}
}
}
}
else {
validate3.errors = [{instancePath:instancePath+"/signatures/keys",schemaPath:"#/properties/signatures/properties/keys/type",keyword:"type",params:{type: "array"},message:"must be array",schema:schema3.properties.signatures.properties.keys.type,parentSchema:schema3.properties.signatures.properties.keys,data:data11}];
return false;
}
}
var valid4 = _errs27 === errors;
}
else {
var valid4 = true;
}
if(valid4){
if(data10.threshold !== undefined && func0.call(data10, "threshold")){
let data13 = data10.threshold;
const _errs32 = errors;
if(!(((typeof data13 == "number") && (!(data13 % 1) && !isNaN(data13))) && (isFinite(data13)))){
validate3.errors = [{instancePath:instancePath+"/signatures/threshold",schemaPath:"#/properties/signatures/properties/threshold/type",keyword:"type",params:{type: "integer"},message:"must be integer",schema:schema3.properties.signatures.properties.threshold.type,parentSchema:schema3.properties.signatures.properties.threshold,data:data13}];
return false;
}
if(errors === _errs32){
if((typeof data13 == "number") && (isFinite(data13))){
if(data13 > 9007199254740991 || isNaN(data13)){
validate3.errors = [{instancePath:instancePath+"/signatures/threshold",schemaPath:"#/properties/signatures/properties/threshold/maximum",keyword:"maximum",params:{comparison: "<=", limit: 9007199254740991},message:"must be <= 9007199254740991",schema:9007199254740991,parentSchema:schema3.properties.signatures.properties.threshold,data:data13}];
return false;
}
else {
if(data13 < 1 || isNaN(data13)){
validate3.errors = [{instancePath:instancePath+"/signatures/threshold",schemaPath:"#/properties/signatures/properties/threshold/minimum",keyword:"minimum",params:{comparison: ">=", limit: 1},message:"must be >= 1",schema:1,parentSchema:schema3.properties.signatures.properties.threshold,data:data13}];
return false;
}
}
}
}
var valid4 = _errs32 === errors;
}
else {
var valid4 = true;
}
if(valid4){
if(data10.url !== undefined && func0.call(data10, "url")){
let data14 = data10.url;
const _errs34 = errors;
if(errors === _errs34){
if(typeof data14 === "string"){
if(!pattern7.test(data14)){
validate3.errors = [{instancePath:instancePath+"/signatures/url",schemaPath:"#/properties/signatures/properties/url/pattern",keyword:"pattern",params:{pattern: "^(https?|file)://"},message:"must match pattern \""+"^(https?|file)://"+"\"",schema:"^(https?|file)://",parentSchema:schema3.properties.signatures.properties.url,data:data14}];
return false;
}
}
else {
validate3.errors = [{instancePath:instancePath+"/signatures/url",schemaPath:"#/properties/signatures/properties/url/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema3.properties.signatures.properties.url.type,parentSchema:schema3.properties.signatures.properties.url,data:data14}];
return false;
}
}
var valid4 = _errs34 === errors;
}
else {
var valid4 = true;
}
}
}
}
}
}
else {
validate3.errors = [{instancePath:instancePath+"/signatures",schemaPath:"#/properties/signatures/type",keyword:"type",params:{type: "object"},message:"must be object",schema:schema3.properties.signatures.type,parentSchema:schema3.properties.signatures,data:data10}];
return false;
}
}
var valid0 = _errs24 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.import !== undefined && func0.call(data, "import")){
let data15 = data.import;
const _errs36 = errors;
if(errors === _errs36){
if(data15 && typeof data15 == "object" && !Array.isArray(data15)){
const _errs38 = errors;
for(const key3 of Object.keys(data15)){
if(!((key3 === "containerd") || (key3 === "docker"))){
validate3.errors = [{instancePath:instancePath+"/import",schemaPath:"#/properties/import/additionalProperties",keyword:"additionalProperties",params:{additionalProperty: key3},message:"must NOT have additional properties",schema:false,parentSchema:schema3.properties.import,data:data15}];
return false;
break;
}
}
if(_errs38 === errors){
if(data15.containerd !== undefined && func0.call(data15, "containerd")){
let data16 = data15.containerd;
const _errs39 = errors;
const _errs40 = errors;
let valid8 = false;
const _errs41 = errors;
if(false !== data16){
const err0 = {instancePath:instancePath+"/import/containerd",schemaPath:"#/properties/import/properties/containerd/anyOf/0/const",keyword:"const",params:{allowedValue: false},message:"must be equal to constant",schema:false,parentSchema:schema3.properties.import.properties.containerd.anyOf[0],data:data16};
if(vErrors === null){
vErrors = [err0];
}
else {
vErrors.push(err0);
}
errors++;
}
var _valid0 = _errs41 === errors;
valid8 = valid8 || _valid0;
if(!valid8){
const _errs42 = errors;
const _errs43 = errors;
if(errors === _errs43){
if(data16 && typeof data16 == "object" && !Array.isArray(data16)){
const _errs45 = errors;
for(const key4 of Object.keys(data16)){
if(!(key4 === "namespace")){
const err1 = {instancePath:instancePath+"/import/containerd",schemaPath:"#/definitions/containerdTarget/additionalProperties",keyword:"additionalProperties",params:{additionalProperty: key4},message:"must NOT have additional properties",schema:false,parentSchema:schema6,data:data16};
if(vErrors === null){
vErrors = [err1];
}
else {
vErrors.push(err1);
}
errors++;
break;
}
}
if(_errs45 === errors){
if(data16.namespace !== undefined && func0.call(data16, "namespace")){
let data17 = data16.namespace;
const _errs46 = errors;
if(errors === _errs46){
if(typeof data17 === "string"){
if(!pattern8.test(data17)){
const err2 = {instancePath:instancePath+"/import/containerd/namespace",schemaPath:"#/definitions/containerdTarget/properties/namespace/pattern",keyword:"pattern",params:{pattern: "^[A-Za-z0-9][A-Za-z0-9._-]*$"},message:"must match pattern \""+"^[A-Za-z0-9][A-Za-z0-9._-]*$"+"\"",schema:"^[A-Za-z0-9][A-Za-z0-9._-]*$",parentSchema:schema6.properties.namespace,data:data17};
if(vErrors === null){
vErrors = [err2];
}
else {
vErrors.push(err2);
}
errors++;
}
}
else {
const err3 = {instancePath:instancePath+"/import/containerd/namespace",schemaPath:"#/definitions/containerdTarget/properties/namespace/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema6.properties.namespace.type,parentSchema:schema6.properties.namespace,data:data17};
if(vErrors === null){
vErrors = [err3];
}
else {
vErrors.push(err3);
}
errors++;
}
}
}
}
}
else {
const err4 = {instancePath:instancePath+"/import/containerd",schemaPath:"#/definitions/containerdTarget/type",keyword:"type",params:{type: "object"},message:"must be object",schema:schema6.type,parentSchema:schema6,data:data16};
if(vErrors === null){
vErrors = [err4];
}
else {
vErrors.push(err4);
}
errors++;
}
}
var _valid0 = _errs42 === errors;
valid8 = valid8 || _valid0;
}
if(!valid8){
const err5 = {instancePath:instancePath+"/import/containerd",schemaPath:"#/properties/import/properties/containerd/anyOf",keyword:"anyOf",params:{},message:"must match a schema in anyOf",schema:schema3.properties.import.properties.containerd.anyOf,parentSchema:schema3.properties.import.properties.containerd,data:data16};
if(vErrors === null){
vErrors = [err5];
}
else {
vErrors.push(err5);
}
errors++;
validate3.errors = vErrors;
return false;
}
else {
errors = _errs40;
if(vErrors !== null){
if(_errs40){
vErrors.length = _errs40;
}
else {
vErrors = null;
}
}
}
var valid7 = _errs39 === errors;
}
else {
var valid7 = true;
}
if(valid7){
if(data15.docker !== undefined && func0.call(data15, "docker")){
let data18 = data15.docker;
const _errs48 = errors;
if(typeof data18 !== "boolean"){
validate3.errors = [{instancePath:instancePath+"/import/docker",schemaPath:"#/properties/import/properties/docker/type",keyword:"type",params:{type: "boolean"},message:"must be boolean",schema:schema3.properties.import.properties.docker.type,parentSchema:schema3.properties.import.properties.docker,data:data18}];
return false;
}
var valid7 = _errs48 === errors;
}
else {
var valid7 = true;
}
}
}
}
else {
validate3.errors = [{instancePath:instancePath+"/import",schemaPath:"#/properties/import/type",keyword:"type",params:{type: "object"},message:"must be object",schema:schema3.properties.import.type,parentSchema:schema3.properties.import,data:data15}];
return false;
}
}
var valid0 = _errs36 === errors;
}
else {
var valid0 = true;
}
}
}
}
}
}
}
}
}
}
}
}
else {
validate3.errors = [{instancePath,schemaPath:"#/type",keyword:"type",params:{type: "object"},message:"must be object",schema:schema3.type,parentSchema:schema3,data}];
return false;
}
}
validate3.errors = vErrors;
return errors === 0;
}

const schema7 = {"type":"object","additionalProperties":false,"required":["name","image"],"description":"A workload the runner keeps running from its image's labelled rootfs, mounted read-only.","properties":{"name":{"type":"string","pattern":"^[a-z0-9][a-z0-9_.-]{0,62}$","patternErrorMessage":"1 to 63 of a-z 0-9 _ . -, starting with a letter or digit","description":"Its containerd id, hostname and cgroup name; each name appears once."},"image":{"type":"string","description":"The name of an image under images: whose labelled rootfs it runs."},"command":{"type":"array","minItems":1,"items":{"type":"string"},"description":"Replaces the image's entrypoint, and its cmd too unless args is given."},"args":{"type":"array","items":{"type":"string"},"description":"Replaces the image's cmd."},"env":{"type":"array","default":[],"items":{"type":"string","pattern":"^[A-Za-z_][A-Za-z0-9_]*=","patternErrorMessage":"NAME=value"},"description":"NAME=value, after the image's environment."},"workingDir":{"type":"string","pattern":"^/","patternErrorMessage":"an absolute path","description":"Replaces the image's working directory."},"user":{"type":["integer","string"],"minimum":0,"maximum":4294967294,"pattern":"^\\d+(:\\d+)?$","errorMessage":"must be a numeric uid or \"uid:gid\"","patternErrorMessage":"a numeric uid or \"uid:gid\"","description":"A numeric uid or \"uid:gid\"; the image's numeric user, else 0, when not given."},"restart":{"enum":["always","on-failure","never"],"default":"always","description":"When it is started again after it exits: always, on-failure (a non-zero code or a signal) or never; after a doubling delay (backoff)."},"backoff":{"type":"object","additionalProperties":false,"description":"The delay before a restart doubles from initial to max; a run longer than max resets it.","properties":{"initial":{"$ref":"#/definitions/duration","default":"1s"},"max":{"$ref":"#/definitions/duration","default":"5m"}}},"resources":{"type":"object","additionalProperties":false,"description":"Its cgroup limits; none when not given.","properties":{"memory":{"$ref":"#/definitions/bytes","description":"Memory limit, at least 4Mi."},"cpus":{"type":"number","exclusiveMinimum":0,"maximum":1024,"description":"CPU limit in cores, like 0.5."},"pids":{"type":"integer","minimum":1,"maximum":4194304,"description":"How many processes and threads it may have."}}},"network":{"enum":["none","host"],"default":"none","description":"none: a network namespace of its own with only loopback; host: the node's network."},"mounts":{"type":"array","default":[],"items":{"$ref":"#/definitions/mount"},"description":"Extra mounts: tmpfs, or read-only binds of host paths."},"capabilities":{"type":"array","default":[],"items":{"type":"string","pattern":"^CAP_[A-Z_]+$","patternErrorMessage":"a capability name like CAP_NET_BIND_SERVICE"},"description":"The capabilities its process keeps; none when not given."},"onTamper":{"enum":["stop","report"],"default":"stop","description":"When a file of its rootfs no longer matches the label manifest: stop it and refuse to start it until the image is fetched and labelled again (stop), or only report."}}};
const schema8 = {"type":["integer","string"],"minimum":1,"maximum":2147483,"pattern":"^\\d+(ms|s|m|h)$","errorMessage":"must be a duration between 1ms and 596h: a number with ms, s, m or h, like \"10m\", or whole seconds","patternErrorMessage":"use a number with ms, s, m or h, like \"10m\"","description":"A duration between 1ms and 596h: \"300ms\", \"30s\", \"10m\", \"2h\", or a whole number of seconds."};
const schema10 = {"type":["integer","string"],"minimum":4194304,"maximum":9007199254740991,"pattern":"^\\d+(Ki|Mi|Gi)?$","errorMessage":"must be at least 4Mi: bytes, or a number with Ki, Mi or Gi, like \"256Mi\"","patternErrorMessage":"bytes, or a number with Ki, Mi or Gi, like \"256Mi\"","description":"Bytes, or a number with Ki, Mi or Gi, like \"256Mi\"; at least 4Mi."};
const pattern9 = new RegExp("^[a-z0-9][a-z0-9_.-]{0,62}$", "u");
const pattern10 = new RegExp("^[A-Za-z_][A-Za-z0-9_]*=", "u");
const pattern11 = new RegExp("^/", "u");
const pattern12 = new RegExp("^\\d+(:\\d+)?$", "u");
const pattern13 = new RegExp("^\\d+(ms|s|m|h)$", "u");
const pattern15 = new RegExp("^\\d+(Ki|Mi|Gi)?$", "u");
const pattern19 = new RegExp("^CAP_[A-Z_]+$", "u");
const schema11 = {"type":"object","additionalProperties":false,"required":["type","destination"],"description":"A tmpfs, or a read-only bind of a host path.","properties":{"type":{"enum":["tmpfs","bind"]},"destination":{"type":"string","pattern":"^/","patternErrorMessage":"an absolute path"},"source":{"type":"string","pattern":"^/","patternErrorMessage":"an absolute host path","description":"bind only: the host path, mounted read-only."},"size":{"$ref":"#/definitions/bytes","description":"tmpfs only: its size limit; 64Mi when not given."}}};

function validate6(data, {instancePath="", parentData, parentDataProperty, rootData=data}={}){
let vErrors = null;
let errors = 0;
if(errors === 0){
if(data && typeof data == "object" && !Array.isArray(data)){
let missing0;
if((((data.type === undefined) || (!(func0.call(data, "type")))) && (missing0 = "type")) || (((data.destination === undefined) || (!(func0.call(data, "destination")))) && (missing0 = "destination"))){
validate6.errors = [{instancePath,schemaPath:"#/required",keyword:"required",params:{missingProperty: missing0},message:"must have required property '"+missing0+"'",schema:schema11.required,parentSchema:schema11,data}];
return false;
}
else {
const _errs1 = errors;
for(const key0 of Object.keys(data)){
if(!((((key0 === "type") || (key0 === "destination")) || (key0 === "source")) || (key0 === "size"))){
validate6.errors = [{instancePath,schemaPath:"#/additionalProperties",keyword:"additionalProperties",params:{additionalProperty: key0},message:"must NOT have additional properties",schema:false,parentSchema:schema11,data}];
return false;
break;
}
}
if(_errs1 === errors){
if(data.type !== undefined && func0.call(data, "type")){
let data0 = data.type;
const _errs2 = errors;
if(!((data0 === "tmpfs") || (data0 === "bind"))){
validate6.errors = [{instancePath:instancePath+"/type",schemaPath:"#/properties/type/enum",keyword:"enum",params:{allowedValues: schema11.properties.type.enum},message:"must be equal to one of the allowed values",schema:schema11.properties.type.enum,parentSchema:schema11.properties.type,data:data0}];
return false;
}
var valid0 = _errs2 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.destination !== undefined && func0.call(data, "destination")){
let data1 = data.destination;
const _errs3 = errors;
if(errors === _errs3){
if(typeof data1 === "string"){
if(!pattern11.test(data1)){
validate6.errors = [{instancePath:instancePath+"/destination",schemaPath:"#/properties/destination/pattern",keyword:"pattern",params:{pattern: "^/"},message:"must match pattern \""+"^/"+"\"",schema:"^/",parentSchema:schema11.properties.destination,data:data1}];
return false;
}
}
else {
validate6.errors = [{instancePath:instancePath+"/destination",schemaPath:"#/properties/destination/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema11.properties.destination.type,parentSchema:schema11.properties.destination,data:data1}];
return false;
}
}
var valid0 = _errs3 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.source !== undefined && func0.call(data, "source")){
let data2 = data.source;
const _errs5 = errors;
if(errors === _errs5){
if(typeof data2 === "string"){
if(!pattern11.test(data2)){
validate6.errors = [{instancePath:instancePath+"/source",schemaPath:"#/properties/source/pattern",keyword:"pattern",params:{pattern: "^/"},message:"must match pattern \""+"^/"+"\"",schema:"^/",parentSchema:schema11.properties.source,data:data2}];
return false;
}
}
else {
validate6.errors = [{instancePath:instancePath+"/source",schemaPath:"#/properties/source/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema11.properties.source.type,parentSchema:schema11.properties.source,data:data2}];
return false;
}
}
var valid0 = _errs5 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.size !== undefined && func0.call(data, "size")){
let data3 = data.size;
const _errs7 = errors;
const _errs8 = errors;
if((!(((typeof data3 == "number") && (!(data3 % 1) && !isNaN(data3))) && (isFinite(data3)))) && (typeof data3 !== "string")){
validate6.errors = [{instancePath:instancePath+"/size",schemaPath:"#/definitions/bytes/type",keyword:"type",params:{type: schema10.type},message:"must be integer,string",schema:schema10.type,parentSchema:schema10,data:data3}];
return false;
}
if(errors === _errs8){
if((typeof data3 == "number") && (isFinite(data3))){
if(data3 > 9007199254740991 || isNaN(data3)){
validate6.errors = [{instancePath:instancePath+"/size",schemaPath:"#/definitions/bytes/maximum",keyword:"maximum",params:{comparison: "<=", limit: 9007199254740991},message:"must be <= 9007199254740991",schema:9007199254740991,parentSchema:schema10,data:data3}];
return false;
}
else {
if(data3 < 4194304 || isNaN(data3)){
validate6.errors = [{instancePath:instancePath+"/size",schemaPath:"#/definitions/bytes/minimum",keyword:"minimum",params:{comparison: ">=", limit: 4194304},message:"must be >= 4194304",schema:4194304,parentSchema:schema10,data:data3}];
return false;
}
}
}
if(errors === _errs8){
if(typeof data3 === "string"){
if(!pattern15.test(data3)){
validate6.errors = [{instancePath:instancePath+"/size",schemaPath:"#/definitions/bytes/pattern",keyword:"pattern",params:{pattern: "^\\d+(Ki|Mi|Gi)?$"},message:"must match pattern \""+"^\\d+(Ki|Mi|Gi)?$"+"\"",schema:"^\\d+(Ki|Mi|Gi)?$",parentSchema:schema10,data:data3}];
return false;
}
}
}
}
var valid0 = _errs7 === errors;
}
else {
var valid0 = true;
}
}
}
}
}
}
}
else {
validate6.errors = [{instancePath,schemaPath:"#/type",keyword:"type",params:{type: "object"},message:"must be object",schema:schema11.type,parentSchema:schema11,data}];
return false;
}
}
validate6.errors = vErrors;
return errors === 0;
}


function validate5(data, {instancePath="", parentData, parentDataProperty, rootData=data}={}){
let vErrors = null;
let errors = 0;
if(errors === 0){
if(data && typeof data == "object" && !Array.isArray(data)){
let missing0;
if((((data.name === undefined) || (!(func0.call(data, "name")))) && (missing0 = "name")) || (((data.image === undefined) || (!(func0.call(data, "image")))) && (missing0 = "image"))){
validate5.errors = [{instancePath,schemaPath:"#/required",keyword:"required",params:{missingProperty: missing0},message:"must have required property '"+missing0+"'",schema:schema7.required,parentSchema:schema7,data}];
return false;
}
else {
const _errs1 = errors;
for(const key0 of Object.keys(data)){
if(!(func0.call(schema7.properties, key0))){
validate5.errors = [{instancePath,schemaPath:"#/additionalProperties",keyword:"additionalProperties",params:{additionalProperty: key0},message:"must NOT have additional properties",schema:false,parentSchema:schema7,data}];
return false;
break;
}
}
if(_errs1 === errors){
if(data.name !== undefined && func0.call(data, "name")){
let data0 = data.name;
const _errs2 = errors;
if(errors === _errs2){
if(typeof data0 === "string"){
if(!pattern9.test(data0)){
validate5.errors = [{instancePath:instancePath+"/name",schemaPath:"#/properties/name/pattern",keyword:"pattern",params:{pattern: "^[a-z0-9][a-z0-9_.-]{0,62}$"},message:"must match pattern \""+"^[a-z0-9][a-z0-9_.-]{0,62}$"+"\"",schema:"^[a-z0-9][a-z0-9_.-]{0,62}$",parentSchema:schema7.properties.name,data:data0}];
return false;
}
}
else {
validate5.errors = [{instancePath:instancePath+"/name",schemaPath:"#/properties/name/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema7.properties.name.type,parentSchema:schema7.properties.name,data:data0}];
return false;
}
}
var valid0 = _errs2 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.image !== undefined && func0.call(data, "image")){
let data1 = data.image;
const _errs4 = errors;
if(typeof data1 !== "string"){
validate5.errors = [{instancePath:instancePath+"/image",schemaPath:"#/properties/image/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema7.properties.image.type,parentSchema:schema7.properties.image,data:data1}];
return false;
}
var valid0 = _errs4 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.command !== undefined && func0.call(data, "command")){
let data2 = data.command;
const _errs6 = errors;
if(errors === _errs6){
if(Array.isArray(data2)){
if(data2.length < 1){
validate5.errors = [{instancePath:instancePath+"/command",schemaPath:"#/properties/command/minItems",keyword:"minItems",params:{limit: 1},message:"must NOT have fewer than 1 items",schema:1,parentSchema:schema7.properties.command,data:data2}];
return false;
}
else {
var valid1 = true;
const len0 = data2.length;
for(let i0=0; i0<len0; i0++){
let data3 = data2[i0];
const _errs8 = errors;
if(typeof data3 !== "string"){
validate5.errors = [{instancePath:instancePath+"/command/" + i0,schemaPath:"#/properties/command/items/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema7.properties.command.items.type,parentSchema:schema7.properties.command.items,data:data3}];
return false;
}
var valid1 = _errs8 === errors;
if(!valid1){
break;
}
}
}
}
else {
validate5.errors = [{instancePath:instancePath+"/command",schemaPath:"#/properties/command/type",keyword:"type",params:{type: "array"},message:"must be array",schema:schema7.properties.command.type,parentSchema:schema7.properties.command,data:data2}];
return false;
}
}
var valid0 = _errs6 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.args !== undefined && func0.call(data, "args")){
let data4 = data.args;
const _errs10 = errors;
if(errors === _errs10){
if(Array.isArray(data4)){
var valid2 = true;
const len1 = data4.length;
for(let i1=0; i1<len1; i1++){
let data5 = data4[i1];
const _errs12 = errors;
if(typeof data5 !== "string"){
validate5.errors = [{instancePath:instancePath+"/args/" + i1,schemaPath:"#/properties/args/items/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema7.properties.args.items.type,parentSchema:schema7.properties.args.items,data:data5}];
return false;
}
var valid2 = _errs12 === errors;
if(!valid2){
break;
}
}
}
else {
validate5.errors = [{instancePath:instancePath+"/args",schemaPath:"#/properties/args/type",keyword:"type",params:{type: "array"},message:"must be array",schema:schema7.properties.args.type,parentSchema:schema7.properties.args,data:data4}];
return false;
}
}
var valid0 = _errs10 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.env !== undefined && func0.call(data, "env")){
let data6 = data.env;
const _errs14 = errors;
if(errors === _errs14){
if(Array.isArray(data6)){
var valid3 = true;
const len2 = data6.length;
for(let i2=0; i2<len2; i2++){
let data7 = data6[i2];
const _errs16 = errors;
if(errors === _errs16){
if(typeof data7 === "string"){
if(!pattern10.test(data7)){
validate5.errors = [{instancePath:instancePath+"/env/" + i2,schemaPath:"#/properties/env/items/pattern",keyword:"pattern",params:{pattern: "^[A-Za-z_][A-Za-z0-9_]*="},message:"must match pattern \""+"^[A-Za-z_][A-Za-z0-9_]*="+"\"",schema:"^[A-Za-z_][A-Za-z0-9_]*=",parentSchema:schema7.properties.env.items,data:data7}];
return false;
}
}
else {
validate5.errors = [{instancePath:instancePath+"/env/" + i2,schemaPath:"#/properties/env/items/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema7.properties.env.items.type,parentSchema:schema7.properties.env.items,data:data7}];
return false;
}
}
var valid3 = _errs16 === errors;
if(!valid3){
break;
}
}
}
else {
validate5.errors = [{instancePath:instancePath+"/env",schemaPath:"#/properties/env/type",keyword:"type",params:{type: "array"},message:"must be array",schema:schema7.properties.env.type,parentSchema:schema7.properties.env,data:data6}];
return false;
}
}
var valid0 = _errs14 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.workingDir !== undefined && func0.call(data, "workingDir")){
let data8 = data.workingDir;
const _errs18 = errors;
if(errors === _errs18){
if(typeof data8 === "string"){
if(!pattern11.test(data8)){
validate5.errors = [{instancePath:instancePath+"/workingDir",schemaPath:"#/properties/workingDir/pattern",keyword:"pattern",params:{pattern: "^/"},message:"must match pattern \""+"^/"+"\"",schema:"^/",parentSchema:schema7.properties.workingDir,data:data8}];
return false;
}
}
else {
validate5.errors = [{instancePath:instancePath+"/workingDir",schemaPath:"#/properties/workingDir/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema7.properties.workingDir.type,parentSchema:schema7.properties.workingDir,data:data8}];
return false;
}
}
var valid0 = _errs18 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.user !== undefined && func0.call(data, "user")){
let data9 = data.user;
const _errs20 = errors;
if((!(((typeof data9 == "number") && (!(data9 % 1) && !isNaN(data9))) && (isFinite(data9)))) && (typeof data9 !== "string")){
validate5.errors = [{instancePath:instancePath+"/user",schemaPath:"#/properties/user/type",keyword:"type",params:{type: schema7.properties.user.type},message:"must be integer,string",schema:schema7.properties.user.type,parentSchema:schema7.properties.user,data:data9}];
return false;
}
if(errors === _errs20){
if((typeof data9 == "number") && (isFinite(data9))){
if(data9 > 4294967294 || isNaN(data9)){
validate5.errors = [{instancePath:instancePath+"/user",schemaPath:"#/properties/user/maximum",keyword:"maximum",params:{comparison: "<=", limit: 4294967294},message:"must be <= 4294967294",schema:4294967294,parentSchema:schema7.properties.user,data:data9}];
return false;
}
else {
if(data9 < 0 || isNaN(data9)){
validate5.errors = [{instancePath:instancePath+"/user",schemaPath:"#/properties/user/minimum",keyword:"minimum",params:{comparison: ">=", limit: 0},message:"must be >= 0",schema:0,parentSchema:schema7.properties.user,data:data9}];
return false;
}
}
}
if(errors === _errs20){
if(typeof data9 === "string"){
if(!pattern12.test(data9)){
validate5.errors = [{instancePath:instancePath+"/user",schemaPath:"#/properties/user/pattern",keyword:"pattern",params:{pattern: "^\\d+(:\\d+)?$"},message:"must match pattern \""+"^\\d+(:\\d+)?$"+"\"",schema:"^\\d+(:\\d+)?$",parentSchema:schema7.properties.user,data:data9}];
return false;
}
}
}
}
var valid0 = _errs20 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.restart !== undefined && func0.call(data, "restart")){
let data10 = data.restart;
const _errs22 = errors;
if(!(((data10 === "always") || (data10 === "on-failure")) || (data10 === "never"))){
validate5.errors = [{instancePath:instancePath+"/restart",schemaPath:"#/properties/restart/enum",keyword:"enum",params:{allowedValues: schema7.properties.restart.enum},message:"must be equal to one of the allowed values",schema:schema7.properties.restart.enum,parentSchema:schema7.properties.restart,data:data10}];
return false;
}
var valid0 = _errs22 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.backoff !== undefined && func0.call(data, "backoff")){
let data11 = data.backoff;
const _errs23 = errors;
if(errors === _errs23){
if(data11 && typeof data11 == "object" && !Array.isArray(data11)){
const _errs25 = errors;
for(const key1 of Object.keys(data11)){
if(!((key1 === "initial") || (key1 === "max"))){
validate5.errors = [{instancePath:instancePath+"/backoff",schemaPath:"#/properties/backoff/additionalProperties",keyword:"additionalProperties",params:{additionalProperty: key1},message:"must NOT have additional properties",schema:false,parentSchema:schema7.properties.backoff,data:data11}];
return false;
break;
}
}
if(_errs25 === errors){
if(data11.initial !== undefined && func0.call(data11, "initial")){
let data12 = data11.initial;
const _errs26 = errors;
const _errs27 = errors;
if((!(((typeof data12 == "number") && (!(data12 % 1) && !isNaN(data12))) && (isFinite(data12)))) && (typeof data12 !== "string")){
validate5.errors = [{instancePath:instancePath+"/backoff/initial",schemaPath:"#/definitions/duration/type",keyword:"type",params:{type: schema8.type},message:"must be integer,string",schema:schema8.type,parentSchema:schema8,data:data12}];
return false;
}
if(errors === _errs27){
if((typeof data12 == "number") && (isFinite(data12))){
if(data12 > 2147483 || isNaN(data12)){
validate5.errors = [{instancePath:instancePath+"/backoff/initial",schemaPath:"#/definitions/duration/maximum",keyword:"maximum",params:{comparison: "<=", limit: 2147483},message:"must be <= 2147483",schema:2147483,parentSchema:schema8,data:data12}];
return false;
}
else {
if(data12 < 1 || isNaN(data12)){
validate5.errors = [{instancePath:instancePath+"/backoff/initial",schemaPath:"#/definitions/duration/minimum",keyword:"minimum",params:{comparison: ">=", limit: 1},message:"must be >= 1",schema:1,parentSchema:schema8,data:data12}];
return false;
}
}
}
if(errors === _errs27){
if(typeof data12 === "string"){
if(!pattern13.test(data12)){
validate5.errors = [{instancePath:instancePath+"/backoff/initial",schemaPath:"#/definitions/duration/pattern",keyword:"pattern",params:{pattern: "^\\d+(ms|s|m|h)$"},message:"must match pattern \""+"^\\d+(ms|s|m|h)$"+"\"",schema:"^\\d+(ms|s|m|h)$",parentSchema:schema8,data:data12}];
return false;
}
}
}
}
var valid4 = _errs26 === errors;
}
else {
var valid4 = true;
}
if(valid4){
if(data11.max !== undefined && func0.call(data11, "max")){
let data13 = data11.max;
const _errs29 = errors;
const _errs30 = errors;
if((!(((typeof data13 == "number") && (!(data13 % 1) && !isNaN(data13))) && (isFinite(data13)))) && (typeof data13 !== "string")){
validate5.errors = [{instancePath:instancePath+"/backoff/max",schemaPath:"#/definitions/duration/type",keyword:"type",params:{type: schema8.type},message:"must be integer,string",schema:schema8.type,parentSchema:schema8,data:data13}];
return false;
}
if(errors === _errs30){
if((typeof data13 == "number") && (isFinite(data13))){
if(data13 > 2147483 || isNaN(data13)){
validate5.errors = [{instancePath:instancePath+"/backoff/max",schemaPath:"#/definitions/duration/maximum",keyword:"maximum",params:{comparison: "<=", limit: 2147483},message:"must be <= 2147483",schema:2147483,parentSchema:schema8,data:data13}];
return false;
}
else {
if(data13 < 1 || isNaN(data13)){
validate5.errors = [{instancePath:instancePath+"/backoff/max",schemaPath:"#/definitions/duration/minimum",keyword:"minimum",params:{comparison: ">=", limit: 1},message:"must be >= 1",schema:1,parentSchema:schema8,data:data13}];
return false;
}
}
}
if(errors === _errs30){
if(typeof data13 === "string"){
if(!pattern13.test(data13)){
validate5.errors = [{instancePath:instancePath+"/backoff/max",schemaPath:"#/definitions/duration/pattern",keyword:"pattern",params:{pattern: "^\\d+(ms|s|m|h)$"},message:"must match pattern \""+"^\\d+(ms|s|m|h)$"+"\"",schema:"^\\d+(ms|s|m|h)$",parentSchema:schema8,data:data13}];
return false;
}
}
}
}
var valid4 = _errs29 === errors;
}
else {
var valid4 = true;
}
}
}
}
else {
validate5.errors = [{instancePath:instancePath+"/backoff",schemaPath:"#/properties/backoff/type",keyword:"type",params:{type: "object"},message:"must be object",schema:schema7.properties.backoff.type,parentSchema:schema7.properties.backoff,data:data11}];
return false;
}
}
var valid0 = _errs23 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.resources !== undefined && func0.call(data, "resources")){
let data14 = data.resources;
const _errs32 = errors;
if(errors === _errs32){
if(data14 && typeof data14 == "object" && !Array.isArray(data14)){
const _errs34 = errors;
for(const key2 of Object.keys(data14)){
if(!(((key2 === "memory") || (key2 === "cpus")) || (key2 === "pids"))){
validate5.errors = [{instancePath:instancePath+"/resources",schemaPath:"#/properties/resources/additionalProperties",keyword:"additionalProperties",params:{additionalProperty: key2},message:"must NOT have additional properties",schema:false,parentSchema:schema7.properties.resources,data:data14}];
return false;
break;
}
}
if(_errs34 === errors){
if(data14.memory !== undefined && func0.call(data14, "memory")){
let data15 = data14.memory;
const _errs35 = errors;
const _errs36 = errors;
if((!(((typeof data15 == "number") && (!(data15 % 1) && !isNaN(data15))) && (isFinite(data15)))) && (typeof data15 !== "string")){
validate5.errors = [{instancePath:instancePath+"/resources/memory",schemaPath:"#/definitions/bytes/type",keyword:"type",params:{type: schema10.type},message:"must be integer,string",schema:schema10.type,parentSchema:schema10,data:data15}];
return false;
}
if(errors === _errs36){
if((typeof data15 == "number") && (isFinite(data15))){
if(data15 > 9007199254740991 || isNaN(data15)){
validate5.errors = [{instancePath:instancePath+"/resources/memory",schemaPath:"#/definitions/bytes/maximum",keyword:"maximum",params:{comparison: "<=", limit: 9007199254740991},message:"must be <= 9007199254740991",schema:9007199254740991,parentSchema:schema10,data:data15}];
return false;
}
else {
if(data15 < 4194304 || isNaN(data15)){
validate5.errors = [{instancePath:instancePath+"/resources/memory",schemaPath:"#/definitions/bytes/minimum",keyword:"minimum",params:{comparison: ">=", limit: 4194304},message:"must be >= 4194304",schema:4194304,parentSchema:schema10,data:data15}];
return false;
}
}
}
if(errors === _errs36){
if(typeof data15 === "string"){
if(!pattern15.test(data15)){
validate5.errors = [{instancePath:instancePath+"/resources/memory",schemaPath:"#/definitions/bytes/pattern",keyword:"pattern",params:{pattern: "^\\d+(Ki|Mi|Gi)?$"},message:"must match pattern \""+"^\\d+(Ki|Mi|Gi)?$"+"\"",schema:"^\\d+(Ki|Mi|Gi)?$",parentSchema:schema10,data:data15}];
return false;
}
}
}
}
var valid7 = _errs35 === errors;
}
else {
var valid7 = true;
}
if(valid7){
if(data14.cpus !== undefined && func0.call(data14, "cpus")){
let data16 = data14.cpus;
const _errs38 = errors;
if(errors === _errs38){
if((typeof data16 == "number") && (isFinite(data16))){
if(data16 > 1024 || isNaN(data16)){
validate5.errors = [{instancePath:instancePath+"/resources/cpus",schemaPath:"#/properties/resources/properties/cpus/maximum",keyword:"maximum",params:{comparison: "<=", limit: 1024},message:"must be <= 1024",schema:1024,parentSchema:schema7.properties.resources.properties.cpus,data:data16}];
return false;
}
else {
if(data16 <= 0 || isNaN(data16)){
validate5.errors = [{instancePath:instancePath+"/resources/cpus",schemaPath:"#/properties/resources/properties/cpus/exclusiveMinimum",keyword:"exclusiveMinimum",params:{comparison: ">", limit: 0},message:"must be > 0",schema:0,parentSchema:schema7.properties.resources.properties.cpus,data:data16}];
return false;
}
}
}
else {
validate5.errors = [{instancePath:instancePath+"/resources/cpus",schemaPath:"#/properties/resources/properties/cpus/type",keyword:"type",params:{type: "number"},message:"must be number",schema:schema7.properties.resources.properties.cpus.type,parentSchema:schema7.properties.resources.properties.cpus,data:data16}];
return false;
}
}
var valid7 = _errs38 === errors;
}
else {
var valid7 = true;
}
if(valid7){
if(data14.pids !== undefined && func0.call(data14, "pids")){
let data17 = data14.pids;
const _errs40 = errors;
if(!(((typeof data17 == "number") && (!(data17 % 1) && !isNaN(data17))) && (isFinite(data17)))){
validate5.errors = [{instancePath:instancePath+"/resources/pids",schemaPath:"#/properties/resources/properties/pids/type",keyword:"type",params:{type: "integer"},message:"must be integer",schema:schema7.properties.resources.properties.pids.type,parentSchema:schema7.properties.resources.properties.pids,data:data17}];
return false;
}
if(errors === _errs40){
if((typeof data17 == "number") && (isFinite(data17))){
if(data17 > 4194304 || isNaN(data17)){
validate5.errors = [{instancePath:instancePath+"/resources/pids",schemaPath:"#/properties/resources/properties/pids/maximum",keyword:"maximum",params:{comparison: "<=", limit: 4194304},message:"must be <= 4194304",schema:4194304,parentSchema:schema7.properties.resources.properties.pids,data:data17}];
return false;
}
else {
if(data17 < 1 || isNaN(data17)){
validate5.errors = [{instancePath:instancePath+"/resources/pids",schemaPath:"#/properties/resources/properties/pids/minimum",keyword:"minimum",params:{comparison: ">=", limit: 1},message:"must be >= 1",schema:1,parentSchema:schema7.properties.resources.properties.pids,data:data17}];
return false;
}
}
}
}
var valid7 = _errs40 === errors;
}
else {
var valid7 = true;
}
}
}
}
}
else {
validate5.errors = [{instancePath:instancePath+"/resources",schemaPath:"#/properties/resources/type",keyword:"type",params:{type: "object"},message:"must be object",schema:schema7.properties.resources.type,parentSchema:schema7.properties.resources,data:data14}];
return false;
}
}
var valid0 = _errs32 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.network !== undefined && func0.call(data, "network")){
let data18 = data.network;
const _errs42 = errors;
if(!((data18 === "none") || (data18 === "host"))){
validate5.errors = [{instancePath:instancePath+"/network",schemaPath:"#/properties/network/enum",keyword:"enum",params:{allowedValues: schema7.properties.network.enum},message:"must be equal to one of the allowed values",schema:schema7.properties.network.enum,parentSchema:schema7.properties.network,data:data18}];
return false;
}
var valid0 = _errs42 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.mounts !== undefined && func0.call(data, "mounts")){
let data19 = data.mounts;
const _errs43 = errors;
if(errors === _errs43){
if(Array.isArray(data19)){
var valid9 = true;
const len3 = data19.length;
for(let i3=0; i3<len3; i3++){
const _errs45 = errors;
if(!(validate6(data19[i3], {instancePath:instancePath+"/mounts/" + i3,parentData:data19,parentDataProperty:i3,rootData}))){
vErrors = vErrors === null ? validate6.errors : vErrors.concat(validate6.errors);
errors = vErrors.length;
}
var valid9 = _errs45 === errors;
if(!valid9){
break;
}
}
}
else {
validate5.errors = [{instancePath:instancePath+"/mounts",schemaPath:"#/properties/mounts/type",keyword:"type",params:{type: "array"},message:"must be array",schema:schema7.properties.mounts.type,parentSchema:schema7.properties.mounts,data:data19}];
return false;
}
}
var valid0 = _errs43 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.capabilities !== undefined && func0.call(data, "capabilities")){
let data21 = data.capabilities;
const _errs46 = errors;
if(errors === _errs46){
if(Array.isArray(data21)){
var valid10 = true;
const len4 = data21.length;
for(let i4=0; i4<len4; i4++){
let data22 = data21[i4];
const _errs48 = errors;
if(errors === _errs48){
if(typeof data22 === "string"){
if(!pattern19.test(data22)){
validate5.errors = [{instancePath:instancePath+"/capabilities/" + i4,schemaPath:"#/properties/capabilities/items/pattern",keyword:"pattern",params:{pattern: "^CAP_[A-Z_]+$"},message:"must match pattern \""+"^CAP_[A-Z_]+$"+"\"",schema:"^CAP_[A-Z_]+$",parentSchema:schema7.properties.capabilities.items,data:data22}];
return false;
}
}
else {
validate5.errors = [{instancePath:instancePath+"/capabilities/" + i4,schemaPath:"#/properties/capabilities/items/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema7.properties.capabilities.items.type,parentSchema:schema7.properties.capabilities.items,data:data22}];
return false;
}
}
var valid10 = _errs48 === errors;
if(!valid10){
break;
}
}
}
else {
validate5.errors = [{instancePath:instancePath+"/capabilities",schemaPath:"#/properties/capabilities/type",keyword:"type",params:{type: "array"},message:"must be array",schema:schema7.properties.capabilities.type,parentSchema:schema7.properties.capabilities,data:data21}];
return false;
}
}
var valid0 = _errs46 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.onTamper !== undefined && func0.call(data, "onTamper")){
let data23 = data.onTamper;
const _errs50 = errors;
if(!((data23 === "stop") || (data23 === "report"))){
validate5.errors = [{instancePath:instancePath+"/onTamper",schemaPath:"#/properties/onTamper/enum",keyword:"enum",params:{allowedValues: schema7.properties.onTamper.enum},message:"must be equal to one of the allowed values",schema:schema7.properties.onTamper.enum,parentSchema:schema7.properties.onTamper,data:data23}];
return false;
}
var valid0 = _errs50 === errors;
}
else {
var valid0 = true;
}
}
}
}
}
}
}
}
}
}
}
}
}
}
}
}
}
else {
validate5.errors = [{instancePath,schemaPath:"#/type",keyword:"type",params:{type: "object"},message:"must be object",schema:schema7.type,parentSchema:schema7,data}];
return false;
}
}
validate5.errors = vErrors;
return errors === 0;
}

const schema14 = {"type":"object","additionalProperties":false,"description":"IMA labelling and enforcement of container root filesystems.","properties":{"mode":{"enum":["enforce","log","off"],"default":"enforce","description":"enforce: deny what does not match its label; log: report it only; off."},"reverify":{"$ref":"#/definitions/duration","default":"10m","description":"How often labelled files are checked again."},"signatures":{"type":"boolean","default":false,"description":"true: write 0x03 v2 signatures for appraise_type=imasig instead of hashes."}}};

function validate9(data, {instancePath="", parentData, parentDataProperty, rootData=data}={}){
let vErrors = null;
let errors = 0;
if(errors === 0){
if(data && typeof data == "object" && !Array.isArray(data)){
const _errs1 = errors;
for(const key0 of Object.keys(data)){
if(!(((key0 === "mode") || (key0 === "reverify")) || (key0 === "signatures"))){
validate9.errors = [{instancePath,schemaPath:"#/additionalProperties",keyword:"additionalProperties",params:{additionalProperty: key0},message:"must NOT have additional properties",schema:false,parentSchema:schema14,data}];
return false;
break;
}
}
if(_errs1 === errors){
if(data.mode !== undefined && func0.call(data, "mode")){
let data0 = data.mode;
const _errs2 = errors;
if(!(((data0 === "enforce") || (data0 === "log")) || (data0 === "off"))){
validate9.errors = [{instancePath:instancePath+"/mode",schemaPath:"#/properties/mode/enum",keyword:"enum",params:{allowedValues: schema14.properties.mode.enum},message:"must be equal to one of the allowed values",schema:schema14.properties.mode.enum,parentSchema:schema14.properties.mode,data:data0}];
return false;
}
var valid0 = _errs2 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.reverify !== undefined && func0.call(data, "reverify")){
let data1 = data.reverify;
const _errs3 = errors;
const _errs4 = errors;
if((!(((typeof data1 == "number") && (!(data1 % 1) && !isNaN(data1))) && (isFinite(data1)))) && (typeof data1 !== "string")){
validate9.errors = [{instancePath:instancePath+"/reverify",schemaPath:"#/definitions/duration/type",keyword:"type",params:{type: schema8.type},message:"must be integer,string",schema:schema8.type,parentSchema:schema8,data:data1}];
return false;
}
if(errors === _errs4){
if((typeof data1 == "number") && (isFinite(data1))){
if(data1 > 2147483 || isNaN(data1)){
validate9.errors = [{instancePath:instancePath+"/reverify",schemaPath:"#/definitions/duration/maximum",keyword:"maximum",params:{comparison: "<=", limit: 2147483},message:"must be <= 2147483",schema:2147483,parentSchema:schema8,data:data1}];
return false;
}
else {
if(data1 < 1 || isNaN(data1)){
validate9.errors = [{instancePath:instancePath+"/reverify",schemaPath:"#/definitions/duration/minimum",keyword:"minimum",params:{comparison: ">=", limit: 1},message:"must be >= 1",schema:1,parentSchema:schema8,data:data1}];
return false;
}
}
}
if(errors === _errs4){
if(typeof data1 === "string"){
if(!pattern13.test(data1)){
validate9.errors = [{instancePath:instancePath+"/reverify",schemaPath:"#/definitions/duration/pattern",keyword:"pattern",params:{pattern: "^\\d+(ms|s|m|h)$"},message:"must match pattern \""+"^\\d+(ms|s|m|h)$"+"\"",schema:"^\\d+(ms|s|m|h)$",parentSchema:schema8,data:data1}];
return false;
}
}
}
}
var valid0 = _errs3 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.signatures !== undefined && func0.call(data, "signatures")){
let data2 = data.signatures;
const _errs6 = errors;
if(typeof data2 !== "boolean"){
validate9.errors = [{instancePath:instancePath+"/signatures",schemaPath:"#/properties/signatures/type",keyword:"type",params:{type: "boolean"},message:"must be boolean",schema:schema14.properties.signatures.type,parentSchema:schema14.properties.signatures,data:data2}];
return false;
}
var valid0 = _errs6 === errors;
}
else {
var valid0 = true;
}
}
}
}
}
else {
validate9.errors = [{instancePath,schemaPath:"#/type",keyword:"type",params:{type: "object"},message:"must be object",schema:schema14.type,parentSchema:schema14,data}];
return false;
}
}
validate9.errors = vErrors;
return errors === 0;
}

const schema16 = {"type":"object","additionalProperties":false,"description":"Bounds on what one fetch or import may take.","properties":{"maxImageBytes":{"type":"integer","minimum":1,"maximum":9007199254740991,"default":4294967296,"description":"Largest archive fetched, in bytes."},"fetchTimeout":{"$ref":"#/definitions/duration","default":"30m","description":"How long one fetch may take."},"stallTimeout":{"$ref":"#/definitions/duration","default":"30s","description":"How long a fetch may go without a byte."},"maxArchiveEntries":{"type":"integer","minimum":1,"maximum":9007199254740991,"default":200000,"description":"Most entries in one archive."},"maxUnpackedBytes":{"type":"integer","minimum":1,"maximum":9007199254740991,"default":17179869184,"description":"Most bytes one archive unpacks to."}}};

function validate11(data, {instancePath="", parentData, parentDataProperty, rootData=data}={}){
let vErrors = null;
let errors = 0;
if(errors === 0){
if(data && typeof data == "object" && !Array.isArray(data)){
const _errs1 = errors;
for(const key0 of Object.keys(data)){
if(!(((((key0 === "maxImageBytes") || (key0 === "fetchTimeout")) || (key0 === "stallTimeout")) || (key0 === "maxArchiveEntries")) || (key0 === "maxUnpackedBytes"))){
validate11.errors = [{instancePath,schemaPath:"#/additionalProperties",keyword:"additionalProperties",params:{additionalProperty: key0},message:"must NOT have additional properties",schema:false,parentSchema:schema16,data}];
return false;
break;
}
}
if(_errs1 === errors){
if(data.maxImageBytes !== undefined && func0.call(data, "maxImageBytes")){
let data0 = data.maxImageBytes;
const _errs2 = errors;
if(!(((typeof data0 == "number") && (!(data0 % 1) && !isNaN(data0))) && (isFinite(data0)))){
validate11.errors = [{instancePath:instancePath+"/maxImageBytes",schemaPath:"#/properties/maxImageBytes/type",keyword:"type",params:{type: "integer"},message:"must be integer",schema:schema16.properties.maxImageBytes.type,parentSchema:schema16.properties.maxImageBytes,data:data0}];
return false;
}
if(errors === _errs2){
if((typeof data0 == "number") && (isFinite(data0))){
if(data0 > 9007199254740991 || isNaN(data0)){
validate11.errors = [{instancePath:instancePath+"/maxImageBytes",schemaPath:"#/properties/maxImageBytes/maximum",keyword:"maximum",params:{comparison: "<=", limit: 9007199254740991},message:"must be <= 9007199254740991",schema:9007199254740991,parentSchema:schema16.properties.maxImageBytes,data:data0}];
return false;
}
else {
if(data0 < 1 || isNaN(data0)){
validate11.errors = [{instancePath:instancePath+"/maxImageBytes",schemaPath:"#/properties/maxImageBytes/minimum",keyword:"minimum",params:{comparison: ">=", limit: 1},message:"must be >= 1",schema:1,parentSchema:schema16.properties.maxImageBytes,data:data0}];
return false;
}
}
}
}
var valid0 = _errs2 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.fetchTimeout !== undefined && func0.call(data, "fetchTimeout")){
let data1 = data.fetchTimeout;
const _errs4 = errors;
const _errs5 = errors;
if((!(((typeof data1 == "number") && (!(data1 % 1) && !isNaN(data1))) && (isFinite(data1)))) && (typeof data1 !== "string")){
validate11.errors = [{instancePath:instancePath+"/fetchTimeout",schemaPath:"#/definitions/duration/type",keyword:"type",params:{type: schema8.type},message:"must be integer,string",schema:schema8.type,parentSchema:schema8,data:data1}];
return false;
}
if(errors === _errs5){
if((typeof data1 == "number") && (isFinite(data1))){
if(data1 > 2147483 || isNaN(data1)){
validate11.errors = [{instancePath:instancePath+"/fetchTimeout",schemaPath:"#/definitions/duration/maximum",keyword:"maximum",params:{comparison: "<=", limit: 2147483},message:"must be <= 2147483",schema:2147483,parentSchema:schema8,data:data1}];
return false;
}
else {
if(data1 < 1 || isNaN(data1)){
validate11.errors = [{instancePath:instancePath+"/fetchTimeout",schemaPath:"#/definitions/duration/minimum",keyword:"minimum",params:{comparison: ">=", limit: 1},message:"must be >= 1",schema:1,parentSchema:schema8,data:data1}];
return false;
}
}
}
if(errors === _errs5){
if(typeof data1 === "string"){
if(!pattern13.test(data1)){
validate11.errors = [{instancePath:instancePath+"/fetchTimeout",schemaPath:"#/definitions/duration/pattern",keyword:"pattern",params:{pattern: "^\\d+(ms|s|m|h)$"},message:"must match pattern \""+"^\\d+(ms|s|m|h)$"+"\"",schema:"^\\d+(ms|s|m|h)$",parentSchema:schema8,data:data1}];
return false;
}
}
}
}
var valid0 = _errs4 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.stallTimeout !== undefined && func0.call(data, "stallTimeout")){
let data2 = data.stallTimeout;
const _errs7 = errors;
const _errs8 = errors;
if((!(((typeof data2 == "number") && (!(data2 % 1) && !isNaN(data2))) && (isFinite(data2)))) && (typeof data2 !== "string")){
validate11.errors = [{instancePath:instancePath+"/stallTimeout",schemaPath:"#/definitions/duration/type",keyword:"type",params:{type: schema8.type},message:"must be integer,string",schema:schema8.type,parentSchema:schema8,data:data2}];
return false;
}
if(errors === _errs8){
if((typeof data2 == "number") && (isFinite(data2))){
if(data2 > 2147483 || isNaN(data2)){
validate11.errors = [{instancePath:instancePath+"/stallTimeout",schemaPath:"#/definitions/duration/maximum",keyword:"maximum",params:{comparison: "<=", limit: 2147483},message:"must be <= 2147483",schema:2147483,parentSchema:schema8,data:data2}];
return false;
}
else {
if(data2 < 1 || isNaN(data2)){
validate11.errors = [{instancePath:instancePath+"/stallTimeout",schemaPath:"#/definitions/duration/minimum",keyword:"minimum",params:{comparison: ">=", limit: 1},message:"must be >= 1",schema:1,parentSchema:schema8,data:data2}];
return false;
}
}
}
if(errors === _errs8){
if(typeof data2 === "string"){
if(!pattern13.test(data2)){
validate11.errors = [{instancePath:instancePath+"/stallTimeout",schemaPath:"#/definitions/duration/pattern",keyword:"pattern",params:{pattern: "^\\d+(ms|s|m|h)$"},message:"must match pattern \""+"^\\d+(ms|s|m|h)$"+"\"",schema:"^\\d+(ms|s|m|h)$",parentSchema:schema8,data:data2}];
return false;
}
}
}
}
var valid0 = _errs7 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.maxArchiveEntries !== undefined && func0.call(data, "maxArchiveEntries")){
let data3 = data.maxArchiveEntries;
const _errs10 = errors;
if(!(((typeof data3 == "number") && (!(data3 % 1) && !isNaN(data3))) && (isFinite(data3)))){
validate11.errors = [{instancePath:instancePath+"/maxArchiveEntries",schemaPath:"#/properties/maxArchiveEntries/type",keyword:"type",params:{type: "integer"},message:"must be integer",schema:schema16.properties.maxArchiveEntries.type,parentSchema:schema16.properties.maxArchiveEntries,data:data3}];
return false;
}
if(errors === _errs10){
if((typeof data3 == "number") && (isFinite(data3))){
if(data3 > 9007199254740991 || isNaN(data3)){
validate11.errors = [{instancePath:instancePath+"/maxArchiveEntries",schemaPath:"#/properties/maxArchiveEntries/maximum",keyword:"maximum",params:{comparison: "<=", limit: 9007199254740991},message:"must be <= 9007199254740991",schema:9007199254740991,parentSchema:schema16.properties.maxArchiveEntries,data:data3}];
return false;
}
else {
if(data3 < 1 || isNaN(data3)){
validate11.errors = [{instancePath:instancePath+"/maxArchiveEntries",schemaPath:"#/properties/maxArchiveEntries/minimum",keyword:"minimum",params:{comparison: ">=", limit: 1},message:"must be >= 1",schema:1,parentSchema:schema16.properties.maxArchiveEntries,data:data3}];
return false;
}
}
}
}
var valid0 = _errs10 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.maxUnpackedBytes !== undefined && func0.call(data, "maxUnpackedBytes")){
let data4 = data.maxUnpackedBytes;
const _errs12 = errors;
if(!(((typeof data4 == "number") && (!(data4 % 1) && !isNaN(data4))) && (isFinite(data4)))){
validate11.errors = [{instancePath:instancePath+"/maxUnpackedBytes",schemaPath:"#/properties/maxUnpackedBytes/type",keyword:"type",params:{type: "integer"},message:"must be integer",schema:schema16.properties.maxUnpackedBytes.type,parentSchema:schema16.properties.maxUnpackedBytes,data:data4}];
return false;
}
if(errors === _errs12){
if((typeof data4 == "number") && (isFinite(data4))){
if(data4 > 9007199254740991 || isNaN(data4)){
validate11.errors = [{instancePath:instancePath+"/maxUnpackedBytes",schemaPath:"#/properties/maxUnpackedBytes/maximum",keyword:"maximum",params:{comparison: "<=", limit: 9007199254740991},message:"must be <= 9007199254740991",schema:9007199254740991,parentSchema:schema16.properties.maxUnpackedBytes,data:data4}];
return false;
}
else {
if(data4 < 1 || isNaN(data4)){
validate11.errors = [{instancePath:instancePath+"/maxUnpackedBytes",schemaPath:"#/properties/maxUnpackedBytes/minimum",keyword:"minimum",params:{comparison: ">=", limit: 1},message:"must be >= 1",schema:1,parentSchema:schema16.properties.maxUnpackedBytes,data:data4}];
return false;
}
}
}
}
var valid0 = _errs12 === errors;
}
else {
var valid0 = true;
}
}
}
}
}
}
}
else {
validate11.errors = [{instancePath,schemaPath:"#/type",keyword:"type",params:{type: "object"},message:"must be object",schema:schema16.type,parentSchema:schema16,data}];
return false;
}
}
validate11.errors = vErrors;
return errors === 0;
}

const pattern20 = new RegExp("^verify(\\.[A-Za-z0-9_-]+)+$", "u");

function validate0(data, {instancePath="", parentData, parentDataProperty, rootData=data}={}){
/*# sourceURL="urn:sealkit:policy:v1" */;
let vErrors = null;
let errors = 0;
if(errors === 0){
if(data && typeof data == "object" && !Array.isArray(data)){
let missing0;
if(((((data.apiVersion === undefined) || (!(func0.call(data, "apiVersion")))) && (missing0 = "apiVersion")) || (((data.kind === undefined) || (!(func0.call(data, "kind")))) && (missing0 = "kind"))) || (((data.serial === undefined) || (!(func0.call(data, "serial")))) && (missing0 = "serial"))){
validate0.errors = [{instancePath,schemaPath:"#/required",keyword:"required",params:{missingProperty: missing0},message:"must have required property '"+missing0+"'",schema:schema0.required,parentSchema:schema0,data}];
return false;
}
else {
const _errs1 = errors;
for(const key0 of Object.keys(data)){
if(!(func0.call(schema0.properties, key0))){
validate0.errors = [{instancePath,schemaPath:"#/additionalProperties",keyword:"additionalProperties",params:{additionalProperty: key0},message:"must NOT have additional properties",schema:false,parentSchema:schema0,data}];
return false;
break;
}
}
if(_errs1 === errors){
if(data.apiVersion !== undefined && func0.call(data, "apiVersion")){
let data0 = data.apiVersion;
const _errs2 = errors;
if("sealkit/v1" !== data0){
validate0.errors = [{instancePath:instancePath+"/apiVersion",schemaPath:"#/properties/apiVersion/const",keyword:"const",params:{allowedValue: "sealkit/v1"},message:"must be equal to constant",schema:"sealkit/v1",parentSchema:schema0.properties.apiVersion,data:data0}];
return false;
}
var valid0 = _errs2 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.kind !== undefined && func0.call(data, "kind")){
let data1 = data.kind;
const _errs3 = errors;
if("NodePolicy" !== data1){
validate0.errors = [{instancePath:instancePath+"/kind",schemaPath:"#/properties/kind/const",keyword:"const",params:{allowedValue: "NodePolicy"},message:"must be equal to constant",schema:"NodePolicy",parentSchema:schema0.properties.kind,data:data1}];
return false;
}
var valid0 = _errs3 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.serial !== undefined && func0.call(data, "serial")){
let data2 = data.serial;
const _errs4 = errors;
if(!(((typeof data2 == "number") && (!(data2 % 1) && !isNaN(data2))) && (isFinite(data2)))){
validate0.errors = [{instancePath:instancePath+"/serial",schemaPath:"#/properties/serial/type",keyword:"type",params:{type: "integer"},message:"must be integer",schema:schema0.properties.serial.type,parentSchema:schema0.properties.serial,data:data2}];
return false;
}
if(errors === _errs4){
if((typeof data2 == "number") && (isFinite(data2))){
if(data2 > 9007199254740991 || isNaN(data2)){
validate0.errors = [{instancePath:instancePath+"/serial",schemaPath:"#/properties/serial/maximum",keyword:"maximum",params:{comparison: "<=", limit: 9007199254740991},message:"must be <= 9007199254740991",schema:9007199254740991,parentSchema:schema0.properties.serial,data:data2}];
return false;
}
else {
if(data2 < 1 || isNaN(data2)){
validate0.errors = [{instancePath:instancePath+"/serial",schemaPath:"#/properties/serial/minimum",keyword:"minimum",params:{comparison: ">=", limit: 1},message:"must be >= 1",schema:1,parentSchema:schema0.properties.serial,data:data2}];
return false;
}
}
}
}
var valid0 = _errs4 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.keys !== undefined && func0.call(data, "keys")){
let data3 = data.keys;
const _errs6 = errors;
if(errors === _errs6){
if(Array.isArray(data3)){
var valid1 = true;
const len0 = data3.length;
for(let i0=0; i0<len0; i0++){
const _errs8 = errors;
if(!(validate1(data3[i0], {instancePath:instancePath+"/keys/" + i0,parentData:data3,parentDataProperty:i0,rootData}))){
vErrors = vErrors === null ? validate1.errors : vErrors.concat(validate1.errors);
errors = vErrors.length;
}
var valid1 = _errs8 === errors;
if(!valid1){
break;
}
}
}
else {
validate0.errors = [{instancePath:instancePath+"/keys",schemaPath:"#/properties/keys/type",keyword:"type",params:{type: "array"},message:"must be array",schema:schema0.properties.keys.type,parentSchema:schema0.properties.keys,data:data3}];
return false;
}
}
var valid0 = _errs6 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.images !== undefined && func0.call(data, "images")){
let data5 = data.images;
const _errs9 = errors;
if(errors === _errs9){
if(Array.isArray(data5)){
var valid2 = true;
const len1 = data5.length;
for(let i1=0; i1<len1; i1++){
const _errs11 = errors;
if(!(validate3(data5[i1], {instancePath:instancePath+"/images/" + i1,parentData:data5,parentDataProperty:i1,rootData}))){
vErrors = vErrors === null ? validate3.errors : vErrors.concat(validate3.errors);
errors = vErrors.length;
}
var valid2 = _errs11 === errors;
if(!valid2){
break;
}
}
}
else {
validate0.errors = [{instancePath:instancePath+"/images",schemaPath:"#/properties/images/type",keyword:"type",params:{type: "array"},message:"must be array",schema:schema0.properties.images.type,parentSchema:schema0.properties.images,data:data5}];
return false;
}
}
var valid0 = _errs9 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.containers !== undefined && func0.call(data, "containers")){
let data7 = data.containers;
const _errs12 = errors;
if(errors === _errs12){
if(Array.isArray(data7)){
var valid3 = true;
const len2 = data7.length;
for(let i2=0; i2<len2; i2++){
const _errs14 = errors;
if(!(validate5(data7[i2], {instancePath:instancePath+"/containers/" + i2,parentData:data7,parentDataProperty:i2,rootData}))){
vErrors = vErrors === null ? validate5.errors : vErrors.concat(validate5.errors);
errors = vErrors.length;
}
var valid3 = _errs14 === errors;
if(!valid3){
break;
}
}
}
else {
validate0.errors = [{instancePath:instancePath+"/containers",schemaPath:"#/properties/containers/type",keyword:"type",params:{type: "array"},message:"must be array",schema:schema0.properties.containers.type,parentSchema:schema0.properties.containers,data:data7}];
return false;
}
}
var valid0 = _errs12 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.verifiers !== undefined && func0.call(data, "verifiers")){
let data9 = data.verifiers;
const _errs15 = errors;
if(errors === _errs15){
if(Array.isArray(data9)){
var valid4 = true;
const len3 = data9.length;
for(let i3=0; i3<len3; i3++){
let data10 = data9[i3];
const _errs17 = errors;
const _errs18 = errors;
if(errors === _errs18){
if(data10 && typeof data10 == "object" && !Array.isArray(data10)){
let missing1;
if(((data10.subject === undefined) || (!(func0.call(data10, "subject")))) && (missing1 = "subject")){
validate0.errors = [{instancePath:instancePath+"/verifiers/" + i3,schemaPath:"#/definitions/verifier/required",keyword:"required",params:{missingProperty: missing1},message:"must have required property '"+missing1+"'",schema:schema13.required,parentSchema:schema13,data:data10}];
return false;
}
else {
const _errs20 = errors;
for(const key1 of Object.keys(data10)){
if(!(((key1 === "subject") || (key1 === "required")) || (key1 === "timeoutMs"))){
validate0.errors = [{instancePath:instancePath+"/verifiers/" + i3,schemaPath:"#/definitions/verifier/additionalProperties",keyword:"additionalProperties",params:{additionalProperty: key1},message:"must NOT have additional properties",schema:false,parentSchema:schema13,data:data10}];
return false;
break;
}
}
if(_errs20 === errors){
if(data10.subject !== undefined && func0.call(data10, "subject")){
let data11 = data10.subject;
const _errs21 = errors;
if(errors === _errs21){
if(typeof data11 === "string"){
if(!pattern20.test(data11)){
validate0.errors = [{instancePath:instancePath+"/verifiers/" + i3+"/subject",schemaPath:"#/definitions/verifier/properties/subject/pattern",keyword:"pattern",params:{pattern: "^verify(\\.[A-Za-z0-9_-]+)+$"},message:"must match pattern \""+"^verify(\\.[A-Za-z0-9_-]+)+$"+"\"",schema:"^verify(\\.[A-Za-z0-9_-]+)+$",parentSchema:schema13.properties.subject,data:data11}];
return false;
}
}
else {
validate0.errors = [{instancePath:instancePath+"/verifiers/" + i3+"/subject",schemaPath:"#/definitions/verifier/properties/subject/type",keyword:"type",params:{type: "string"},message:"must be string",schema:schema13.properties.subject.type,parentSchema:schema13.properties.subject,data:data11}];
return false;
}
}
var valid6 = _errs21 === errors;
}
else {
var valid6 = true;
}
if(valid6){
if(data10.required !== undefined && func0.call(data10, "required")){
let data12 = data10.required;
const _errs23 = errors;
if(typeof data12 !== "boolean"){
validate0.errors = [{instancePath:instancePath+"/verifiers/" + i3+"/required",schemaPath:"#/definitions/verifier/properties/required/type",keyword:"type",params:{type: "boolean"},message:"must be boolean",schema:schema13.properties.required.type,parentSchema:schema13.properties.required,data:data12}];
return false;
}
var valid6 = _errs23 === errors;
}
else {
var valid6 = true;
}
if(valid6){
if(data10.timeoutMs !== undefined && func0.call(data10, "timeoutMs")){
let data13 = data10.timeoutMs;
const _errs25 = errors;
if(!(((typeof data13 == "number") && (!(data13 % 1) && !isNaN(data13))) && (isFinite(data13)))){
validate0.errors = [{instancePath:instancePath+"/verifiers/" + i3+"/timeoutMs",schemaPath:"#/definitions/verifier/properties/timeoutMs/type",keyword:"type",params:{type: "integer"},message:"must be integer",schema:schema13.properties.timeoutMs.type,parentSchema:schema13.properties.timeoutMs,data:data13}];
return false;
}
if(errors === _errs25){
if((typeof data13 == "number") && (isFinite(data13))){
if(data13 > 60000 || isNaN(data13)){
validate0.errors = [{instancePath:instancePath+"/verifiers/" + i3+"/timeoutMs",schemaPath:"#/definitions/verifier/properties/timeoutMs/maximum",keyword:"maximum",params:{comparison: "<=", limit: 60000},message:"must be <= 60000",schema:60000,parentSchema:schema13.properties.timeoutMs,data:data13}];
return false;
}
else {
if(data13 < 1 || isNaN(data13)){
validate0.errors = [{instancePath:instancePath+"/verifiers/" + i3+"/timeoutMs",schemaPath:"#/definitions/verifier/properties/timeoutMs/minimum",keyword:"minimum",params:{comparison: ">=", limit: 1},message:"must be >= 1",schema:1,parentSchema:schema13.properties.timeoutMs,data:data13}];
return false;
}
}
}
}
var valid6 = _errs25 === errors;
}
else {
var valid6 = true;
}
}
}
}
}
}
else {
validate0.errors = [{instancePath:instancePath+"/verifiers/" + i3,schemaPath:"#/definitions/verifier/type",keyword:"type",params:{type: "object"},message:"must be object",schema:schema13.type,parentSchema:schema13,data:data10}];
return false;
}
}
var valid4 = _errs17 === errors;
if(!valid4){
break;
}
}
}
else {
validate0.errors = [{instancePath:instancePath+"/verifiers",schemaPath:"#/properties/verifiers/type",keyword:"type",params:{type: "array"},message:"must be array",schema:schema0.properties.verifiers.type,parentSchema:schema0.properties.verifiers,data:data9}];
return false;
}
}
var valid0 = _errs15 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.ima !== undefined && func0.call(data, "ima")){
const _errs27 = errors;
if(!(validate9(data.ima, {instancePath:instancePath+"/ima",parentData:data,parentDataProperty:"ima",rootData}))){
vErrors = vErrors === null ? validate9.errors : vErrors.concat(validate9.errors);
errors = vErrors.length;
}
var valid0 = _errs27 === errors;
}
else {
var valid0 = true;
}
if(valid0){
if(data.limits !== undefined && func0.call(data, "limits")){
const _errs28 = errors;
if(!(validate11(data.limits, {instancePath:instancePath+"/limits",parentData:data,parentDataProperty:"limits",rootData}))){
vErrors = vErrors === null ? validate11.errors : vErrors.concat(validate11.errors);
errors = vErrors.length;
}
var valid0 = _errs28 === errors;
}
else {
var valid0 = true;
}
}
}
}
}
}
}
}
}
}
}
}
else {
validate0.errors = [{instancePath,schemaPath:"#/type",keyword:"type",params:{type: "object"},message:"must be object",schema:schema0.type,parentSchema:schema0,data}];
return false;
}
}
validate0.errors = vErrors;
return errors === 0;
}

export const matchesPolicySchema = validate0 as ValidateFunction;
