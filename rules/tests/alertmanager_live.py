#!/usr/bin/env python3
"""Runs rules/alertmanager.example.yml in a real Alertmanager. Run by scripts/test-rules.sh.

The example is loaded as it is, except for three things a test must change: the webhook URL
(medic-actuator:8080 -> a sink on 127.0.0.1), the token file (-> a temporary file), and the
actuator route's group_wait/group_interval (10s/1m -> 1s, so the test takes seconds). Before
changing them, the script checks that the example holds the agreed values.

Then it posts alerts to Alertmanager's API and asserts:
- the overload alert of a broker that is down is inhibited; other brokers' and another
  cluster's are not;
- the sink receives exactly the actuator's alerts (not the inhibited one, not the stall alert,
  not a foreign alert), each group in its own call, with `Authorization: Bearer <token>`,
  webhook payload version 4 and the annotations (lag_offsets) intact;
- a resolved alert is sent as resolved (send_resolved).

Everything listens on 127.0.0.1 on ports picked at run time, and everything started is stopped.
On failure it prints what it saw and Alertmanager's log, and exits 1.
"""
import datetime
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

try:
    import yaml
except ImportError:
    sys.exit("alertmanager_live.py needs PyYAML: apt-get install python3-yaml")

RULES_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(RULES_DIR, "alertmanager.example.yml")
ACTUATOR_URL = "http://medic-actuator:8080/api/v1/alerts"
ACTUATOR_ALERTS = {"KafkaConsumerLagPersistent", "KafkaBrokerOverloaded",
                   "KafkaBrokerDiskPressure", "KafkaBrokerDown"}


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


class Sink(http.server.BaseHTTPRequestHandler):
    received = []
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with Sink.lock:
            Sink.received.append({
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "body": json.loads(body or b"null"),
            })
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(method, url, payload=None):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        raw = resp.read()
        is_json = resp.headers.get("Content-Type", "").startswith("application/json")
        return resp.status, (json.loads(raw) if raw and is_json else raw)


def actuator_receiver(cfg):
    receivers = [r for r in cfg["receivers"] if r["name"] == "kafka-medic-actuator"]
    check(len(receivers) == 1, "the example must have exactly one receiver kafka-medic-actuator")
    hooks = receivers[0].get("webhook_configs") or []
    check(len(hooks) == 1, "kafka-medic-actuator must have exactly one webhook_config")
    return hooks[0]


def actuator_route(cfg):
    routes = [r for r in cfg["route"].get("routes", []) if r.get("receiver") == "kafka-medic-actuator"]
    check(len(routes) == 1, "the example must have exactly one route to kafka-medic-actuator")
    return routes[0]


def prepare_config(tmp, sink_port, token_file):
    with open(EXAMPLE, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    hook = actuator_receiver(cfg)
    check(hook.get("url") == ACTUATOR_URL, f"webhook url is {hook.get('url')!r}, expected {ACTUATOR_URL!r}")
    check(hook.get("send_resolved") is True, "webhook send_resolved must be true")
    auth = (hook.get("http_config") or {}).get("authorization") or {}
    check(auth.get("type", "Bearer") == "Bearer", f"authorization type is {auth.get('type')!r}, expected Bearer")
    check(bool(auth.get("credentials_file")), "authorization.credentials_file must be set")
    check("credentials" not in auth, "the token must come from a file, not inline credentials")
    check(cfg["route"].get("group_by") == ["alertname", "cluster", "consumergroup", "broker"],
          f"route.group_by is {cfg['route'].get('group_by')!r}")
    route = actuator_route(cfg)
    check(route.get("continue") is True, "the actuator route must continue to the human routes")

    hook["url"] = f"http://127.0.0.1:{sink_port}/api/v1/alerts"
    auth["credentials_file"] = token_file
    route["group_wait"] = "1s"
    route["group_interval"] = "1s"
    path = os.path.join(tmp, "alertmanager.yml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f)
    return path


def alert(name, **labels):
    return {"labels": {"alertname": name, **labels}}


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise Failure(f"timed out after {timeout}s waiting for {what}")


def run(tmp):
    token = "medic-test-token-" + os.urandom(8).hex()
    token_file = os.path.join(tmp, "token")
    with open(token_file, "w", encoding="utf-8") as f:
        f.write(token + "\n")

    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    config = prepare_config(tmp, sink.server_address[1], token_file)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(os.path.join(tmp, "alertmanager.log"), "w+", encoding="utf-8")
    cmd = ["prometheus-alertmanager", f"--config.file={config}", f"--storage.path={tmp}/data",
           f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    print("+ " + " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        def ready():
            try:
                return http_json("GET", base + "/-/ready")[0] == 200
            except OSError:
                check(proc.poll() is None, "Alertmanager exited at start")
                return False
        wait_for(ready, 15, "Alertmanager to be ready")

        lag = alert("KafkaConsumerLagPersistent", cluster="prod", consumergroup="billing", severity="warning")
        lag["annotations"] = {"lag_offsets": "1234", "summary": "lagging"}
        firing = [
            alert("KafkaBrokerDown", cluster="prod", broker="1", severity="critical"),
            alert("KafkaBrokerOverloaded", cluster="prod", broker="1", severity="warning"),
            alert("KafkaBrokerOverloaded", cluster="prod", broker="2", severity="warning"),
            alert("KafkaBrokerOverloaded", cluster="staging", broker="1", severity="warning"),
            lag,
            alert("KafkaConsumerStalled", cluster="prod", consumergroup="billing", topic="orders", severity="critical"),
            alert("KafkaMedicMassFailure", cluster="prod", severity="critical"),
            alert("NodeDown", cluster="prod", instance="node-1", severity="critical"),
        ]
        status, _ = http_json("POST", base + "/api/v2/alerts", firing)
        check(status == 200, f"POST /api/v2/alerts answered {status}")

        # Inhibition, as Alertmanager reports it.
        _, alerts = http_json("GET", base + "/api/v2/alerts")
        state = {(a["labels"]["alertname"], a["labels"]["cluster"], a["labels"].get("broker", "")):
                 a["status"]["state"] for a in alerts}
        expected_state = {
            ("KafkaBrokerDown", "prod", "1"): "active",
            ("KafkaBrokerOverloaded", "prod", "1"): "suppressed",
            ("KafkaBrokerOverloaded", "prod", "2"): "active",
            ("KafkaBrokerOverloaded", "staging", "1"): "active",
        }
        for key, want in expected_state.items():
            check(state.get(key) == want, f"alert {key} is {state.get(key)!r}, expected {want!r}")
        print("ok: KafkaBrokerOverloaded{cluster=prod,broker=1} is inhibited by KafkaBrokerDown; "
              "broker 2 and cluster staging are not")

        # Notifications to the actuator.
        def delivered():
            with Sink.lock:
                got = [r for r in Sink.received if r["body"] and r["body"].get("status") == "firing"]
            return got if len(got) >= 4 else None
        wait_for(delivered, 20, "4 firing notifications at the sink")
        time.sleep(2)  # let anything unexpected arrive too
        with Sink.lock:
            received = list(Sink.received)
        for r in received:
            check(r["path"] == "/api/v1/alerts", f"webhook posted to {r['path']!r}")
            check(r["authorization"] == f"Bearer {token}",
                  f"webhook Authorization header was {r['authorization']!r}, expected the token from the file")
            check(r["body"].get("version") == "4", f"payload version {r['body'].get('version')!r}")
            check(r["body"].get("receiver") == "kafka-medic-actuator", f"receiver {r['body'].get('receiver')!r}")
            names = {a["labels"]["alertname"] for a in r["body"]["alerts"]}
            check(len(names) == 1, f"one notification mixed alert names {sorted(names)}")
        got = sorted((a["labels"]["alertname"], a["labels"]["cluster"],
                      a["labels"].get("broker", a["labels"].get("consumergroup", "")))
                     for r in received for a in r["body"]["alerts"] if a["status"] == "firing")
        want = sorted([("KafkaBrokerDown", "prod", "1"), ("KafkaBrokerOverloaded", "prod", "2"),
                       ("KafkaBrokerOverloaded", "staging", "1"),
                       ("KafkaConsumerLagPersistent", "prod", "billing")])
        check(got == want, f"the actuator received {got}, expected {want}")
        check(len(received) == 4, f"expected one notification per group (4), got {len(received)}")
        lag_sent = [a for r in received for a in r["body"]["alerts"]
                    if a["labels"]["alertname"] == "KafkaConsumerLagPersistent"]
        check(lag_sent[0]["annotations"].get("lag_offsets") == "1234",
              f"lag_offsets arrived as {lag_sent[0]['annotations'].get('lag_offsets')!r}")
        print("ok: the actuator got exactly its 4 alerts, one call per group, with the bearer token "
              "from the file, payload version 4 and lag_offsets intact")

        # Resolution.
        ended = dict(lag)
        ended["endsAt"] = (datetime.datetime.now(datetime.timezone.utc)
                           - datetime.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        http_json("POST", base + "/api/v2/alerts", [ended])

        def resolved():
            with Sink.lock:
                return [a for r in Sink.received for a in r["body"]["alerts"]
                        if a["labels"]["alertname"] == "KafkaConsumerLagPersistent"
                        and a["status"] == "resolved"]
        got = wait_for(resolved, 20, "the resolved KafkaConsumerLagPersistent notification")
        check(got[0]["labels"].get("consumergroup") == "billing", f"resolved alert labels {got[0]['labels']}")
        print("ok: the resolution of KafkaConsumerLagPersistent reached the actuator (send_resolved)")
    except Failure:
        log.flush()
        log.seek(0)
        with Sink.lock:
            print("sink received:\n" + json.dumps(Sink.received, indent=1), file=sys.stderr)
        print("alertmanager log:\n" + log.read(), file=sys.stderr)
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sink.shutdown()
        log.close()


def main():
    tmp = tempfile.mkdtemp(prefix="medic-am-")
    try:
        run(tmp)
    except Failure as e:
        print(f"alertmanager_live.py: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
