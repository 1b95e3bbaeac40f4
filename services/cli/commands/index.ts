import type { Command } from './common.ts';
import { keygen } from './keygen.ts';
import { policySign } from './policy-sign.ts';
import { policyPush } from './policy-push.ts';
import { policyShow } from './policy-show.ts';
import { fetch } from './fetch.ts';
import { signImageCommand } from './sign-image.ts';
import { status } from './status.ts';
import { watch } from './watch.ts';
import { ps } from './ps.ts';
import { logs } from './logs.ts';
import { busConfig } from './bus-config.ts';
import { busInit } from './bus-init.ts';
import { hubConfig } from './hub-config.ts';
import { fleetEnroll } from './fleet-enroll.ts';
import { fleetPush } from './fleet-push.ts';
import { fleetStatus } from './fleet-status.ts';
import { fleetWatch } from './fleet-watch.ts';
import { fleetVerify } from './fleet-verify.ts';
import { ipePolicy } from './ipe-policy.ts';
import { ipePush } from './ipe-push.ts';

// Every command, in the order "sealkit --help" lists them. Two-word names
// ("policy push") belong to a group ("policy").
export const commands: Command[] = [keygen, policySign, policyPush, policyShow, signImageCommand, fetch, status, watch, ps, logs, busConfig, busInit, hubConfig, fleetEnroll, fleetPush, fleetStatus, fleetWatch, fleetVerify, ipePolicy, ipePush];
export const groups = [...new Set(commands.filter((c) => c.name.includes(' ')).map((c) => c.name.split(' ')[0]))];
