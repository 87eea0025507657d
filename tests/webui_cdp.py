#!/usr/bin/env python3
# webui_cdp.py — drives headless Chromium over the DevTools protocol on a
# pipe (--remote-debugging-pipe, no websocket library needed): opens URL,
# polls until the JavaScript expression DONE is true or TIMEOUT seconds of
# real time pass, and prints the page's DOM. Used by test_webui.sh instead of
# --dump-dom, whose virtual time can run out before a streamed reply ends.
# Usage: webui_cdp.py CHROME URL PROFILE_DIR TIMEOUT_S DONE_EXPR
import json, os, subprocess, sys, time
def main():
    chrome, url, profile, timeout, done = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
    to_r, to_w = os.pipe()      # we write commands, chrome reads fd 3
    from_r, from_w = os.pipe()  # chrome writes fd 4, we read
    def child():
        os.dup2(to_r, 3); os.dup2(from_w, 4)
    p = subprocess.Popen([chrome, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--no-first-run", "--user-data-dir=" + profile, "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--remote-debugging-pipe", "about:blank"],
                         preexec_fn=child, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=open(profile + ".err", "w"))
    os.close(to_r); os.close(from_w)
    buf = b""; n = [0]
    def call(method, params=None, session=None):
        n[0] += 1
        msg = {"id": n[0], "method": method, "params": params or {}}
        if session: msg["sessionId"] = session
        os.write(to_w, json.dumps(msg).encode() + b"\0")
        nonlocal buf
        while True:
            while b"\0" not in buf:
                chunk = os.read(from_r, 65536)
                if not chunk: raise SystemExit("chromium closed the pipe")
                buf += chunk
            line, buf = buf.split(b"\0", 1)
            m = json.loads(line)
            if m.get("id") == n[0]:
                if "error" in m: raise SystemExit("CDP error: %r" % m["error"])
                return m["result"]
    tid = call("Target.createTarget", {"url": url})["targetId"]
    sid = call("Target.attachToTarget", {"targetId": tid, "flatten": True})["sessionId"]
    end = time.time() + timeout; dom = ""
    while time.time() < end:
        r = call("Runtime.evaluate", {"expression": "JSON.stringify([document.documentElement.outerHTML, !!(" + done + ")])",
                                      "returnByValue": True}, sid)
        dom, finished = json.loads(r["result"].get("value", '["", false]'))
        if finished: break
        time.sleep(0.2)
    try: call("Browser.close")
    except SystemExit: pass
    p.wait(timeout=30)
    sys.stdout.write(dom)
main()
