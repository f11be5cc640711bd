#!/usr/bin/env python3
"""A real PJSIP phone for tests/phone_pjsua2.rs: pjsua2 (PyPI `pjsua2-python`, PJSIP
2.15) registers one account over UDP on loopback, then de-registers, and exits.

Usage: pjsua2_register.py REGISTRAR_PORT DOMAIN USER PASSWORD DEADLINE_S

stdout, one line each:
  AUTH <algorithm>         every Authorization the phone sent (from its message log)
  REG <code> <reason>      every registration state change (pjsua2's onRegState)
  RESULT registered        the registration got a 200 (then it de-registers)
  RESULT failed <why>      it did not, within DEADLINE_S
Exit code 0 only for `RESULT registered` followed by a 200 to the de-registration.

Headless as ../shared/notes/phones.md describes: no worker threads (the loop below calls
libHandleEvents), the null sound device, no media at all. Every wait is bounded.
"""
import re
import sys
import time

import pjsua2 as pj


class Log(pj.LogWriter):
    """Collects the algorithm of every Authorization header pjsua2 logs as sent."""

    def __init__(self):
        pj.LogWriter.__init__(self)
        self.algorithms = []

    def write(self, entry):
        msg = entry.msg
        if "TX " not in msg:
            return
        for line in msg.splitlines():
            if line.lower().startswith("authorization:"):
                m = re.search(r"algorithm=([A-Za-z0-9-]+)", line)
                alg = m.group(1) if m else "MD5"
                self.algorithms.append(alg)
                print("AUTH", alg, flush=True)


class Account(pj.Account):
    def __init__(self):
        pj.Account.__init__(self)
        self.codes = []

    def onRegState(self, prm):
        self.codes.append(prm.code)
        print("REG", prm.code, prm.reason, flush=True)


def main():
    port, domain, user, password, deadline_s = sys.argv[1:6]
    deadline_s = float(deadline_s)
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.userAgent = "pjsua2-test"
    log = Log()
    cfg.logConfig.writer = log
    # The writer gets what consoleLevel lets through (level 4 carries the messages);
    # it prints only the AUTH lines.
    cfg.logConfig.level = 5
    cfg.logConfig.consoleLevel = 5
    cfg.logConfig.msgLogging = True
    cfg.medConfig.noVad = True
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    ep.audDevManager().setNullDev()

    acfg = pj.AccountConfig()
    acfg.idUri = "sip:%s@%s" % (user, domain)
    acfg.regConfig.registrarUri = "sip:127.0.0.1:%s" % port
    acfg.regConfig.timeoutSec = 300
    acfg.regConfig.retryIntervalSec = 0
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
    acc = Account()
    acc.create(acfg)

    ok = False
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        ep.libHandleEvents(20)
        if 200 in acc.codes:
            ok = True
            break
        if any(c >= 300 for c in acc.codes):
            break
    if not ok:
        print("RESULT failed", acc.codes, flush=True)
        code = 1
    else:
        print("RESULT registered", flush=True)
        acc.codes.clear()
        acc.setRegistration(False)
        end = time.monotonic() + deadline_s
        while time.monotonic() < end and not acc.codes:
            ep.libHandleEvents(20)
        code = 0 if 200 in acc.codes else 1
        print("RESULT deregistered" if code == 0 else "RESULT failed deregister",
              acc.codes, flush=True)
    acc.shutdown()
    ep.libDestroy()
    return code


if __name__ == "__main__":
    sys.exit(main())
