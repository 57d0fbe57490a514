#!/usr/bin/env python3
"""Run the function locally through `cargo lambda watch`, as a Lambda team would.

    local_lambda.py watch            # cargo lambda watch on 127.0.0.1:$LAMBDA_PORT with the local env
    local_lambda.py invoke EVENT     # send events/<file>.json to a running watch (tokens filled in)
    local_lambda.py demo             # fresh demo database, seed, start watch, run jobs, print, stop
    local_lambda.py e2e              # the end-to-end test: every file in events/ through cargo lambda
    local_lambda.py artifact         # the same events against the bootstrap `sam build` made (make package)

Only the standard library: it runs before anything else is installed. Event files may hold the
placeholders <ADMIN_JWT> and <BUYER_JWT>; they are replaced by HS256 tokens signed with JWT_SECRET.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
VENV_BIN = ROOT / ".venv" / "bin"
FUNCTION = "batch-processor"
DEFAULT_SECRET = "local-development-jwt-secret-change-me"
BUYER = "aaaaaaaa-0000-4000-8000-000000000002"  # alice, in the demo seed
ADMIN = "00000000-0000-4000-8000-00000000ad01"


def log(msg):
    print(f"local_lambda: {msg}", file=sys.stderr, flush=True)


def env_with_tools():
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def jwt_secret():
    return os.environ.get("JWT_SECRET") or DEFAULT_SECRET


def token(claims, secret):
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(sig)}"


def admin_token(secret):
    return token({"role": "service_role", "sub": ADMIN, "exp": int(time.time()) + 3600}, secret)


def buyer_token(secret):
    return token({"role": "authenticated", "aud": "authenticated", "sub": BUYER,
                  "exp": int(time.time()) + 3600}, secret)


def prepared_event(path, secret):
    """The event file with its token placeholders filled, as a temporary file."""
    text = Path(path).read_text()
    text = text.replace("<ADMIN_JWT>", admin_token(secret)).replace("<BUYER_JWT>", buyer_token(secret))
    tmp = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    tmp.write(text)
    tmp.close()
    return tmp.name


def server_url():
    out = subprocess.run([str(ROOT / "scripts" / "pg.sh")], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def with_db(url, name):
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")


def psql(url, *args, **kw):
    return subprocess.run(["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", *args], check=True, **kw)


def fresh_database(name):
    """Drops and recreates `name` on the server scripts/pg.sh finds (DATABASE_URL's, if set)."""
    admin = with_db(server_url(), "postgres")
    psql(admin, "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    psql(admin, "-c", f'CREATE DATABASE "{name}"')
    return with_db(admin, name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_env_file(database_url, secret, extra=None):
    lines = {"DATABASE_URL": database_url, "JWT_SECRET": secret, "RUST_LOG": "info,tokio_postgres=warn"}
    lines.update(extra or {})
    path = ROOT / "target" / "lambda.env"
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(f"{k}=\"{v}\"\n" for k, v in lines.items()))
    return path


class Watch:
    """`cargo lambda watch` in its own process group, stopped (with its function) on exit."""

    def __init__(self, port, env_file, log_path):
        self.port, self.env_file, self.log_path = port, env_file, log_path
        self.proc = None

    def __enter__(self):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            ["cargo", "lambda", "watch", "--invoke-address", "127.0.0.1", "--invoke-port", str(self.port),
             "--env-file", str(self.env_file), "--ignore-changes"],
            cwd=ROOT, env=env_with_tools(), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cargo lambda watch exited; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"cargo lambda watch did not listen on {self.port}; see {self.log_path}")

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def invoke(port, event_path, secret):
    """`cargo lambda invoke`: (ok, answer). A function error is (False, the error text)."""
    data = prepared_event(event_path, secret)
    try:
        out = subprocess.run(
            ["cargo", "lambda", "invoke", FUNCTION, "--data-file", data, "--invoke-address", "127.0.0.1",
             "--invoke-port", str(port), "--output-format", "json"],
            cwd=ROOT, env=env_with_tools(), capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(data)
    if out.returncode != 0:
        return False, (out.stdout + out.stderr).strip()
    return True, json.loads(out.stdout)


def http(port, method, path, body=None, headers=None):
    """A request to the function URL emulator: (status, headers, parsed body or None)."""
    url = f"http://127.0.0.1:{port}/lambda-url/{FUNCTION}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            raw = resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, dict(e.headers), json.loads(raw) if raw else None


def proxy_body(answer):
    body = answer.get("body")
    return json.loads(body) if body else None


def actions(answer):
    return {r["batchId"][-2:]: r for r in answer.get("results", [])}


def event_expectations(delivery=False):
    """What each file in events/ must answer, after demo-seed.sql (loaded before orchestrate-dry-run).
    `delivery`: EVENT_BUS_NAME is set (the jobs deliver their events; publish-events finds none left)."""
    return {
        "migrate.json": lambda a: a["success"] and len(a["applied"]) >= 4,
        "orchestrate-dry-run.json": lambda a: a["dryRun"] and {k: r["action"] for k, r in actions(a).items()} == {
            "01": "confirmed", "02": "needs_review", "03": "cancelled", "04": "nearing_target",
            "06": "skipped", "07": "needs_review"} and actions(a)["03"]["ordersCancelled"] == 2,
        "orchestrate.json": lambda a: "supplierOrderId" in actions(a)["01"]
            and actions(a)["03"]["ordersCancelled"] == 2 and a["evaluated"] == 7 and not a["hasMore"],
        "review-batch.json": lambda a: a["results"][0]["action"] == "confirmed"
            and "supplierOrderId" in a["results"][0],
        "rest-api-review-batch.json": lambda a: a["statusCode"] == 200
            and proxy_body(a)["results"][0]["action"] == "cancelled",
        "process-order.json": lambda a: a["batchId"].endswith("04") and not a["isNewBatch"]
            and a["pricing"]["factoryPrice"] == 8.93 and a["pricing"]["buyerPrice"] == 10.71
            and a["batchFillPercentage"] == 90.0,
        "http-api-process-order.json": lambda a: a["statusCode"] == 200
            and proxy_body(a)["batchFillPercentage"] == 100.0,
        "http-api-orchestrate.json": lambda a: a["statusCode"] == 200 and proxy_body(a)["dryRun"],
        "http-api-jwt-authorizer-orchestrate.json": lambda a: a["statusCode"] == 200
            and proxy_body(a)["success"],
        # A Supabase admin user as API Gateway's JWT authorizer hands the claims over: all strings,
        # app_metadata in Go's map rendering.
        "http-api-jwt-authorizer-admin-user.json": lambda a: a["statusCode"] == 200
            and proxy_body(a)["success"],
        "http-api-options.json": lambda a: a["statusCode"] == 204
            and a["headers"]["access-control-allow-origin"] == "https://shop.example.com"
            and a["headers"]["access-control-allow-methods"] == "POST, OPTIONS",
        "eventbridge-schedule.json": lambda a: a["success"] and not a["hasMore"],
        # make e2e runs without EVENT_BUS_NAME: nothing is sent, the answer says so and counts what waits.
        "publish-events.json": (lambda a: a["success"] and a["deliveryEnabled"] and a["failed"] == 0
                                and a["pending"] == 0) if delivery else
                               (lambda a: a["success"] and a["deliveryEnabled"] is False
                                and a["published"] == 0 and a["pending"] > 0),
    }


# ---- commands ----------------------------------------------------------------

def cmd_watch(args):
    url = os.environ.get("DATABASE_URL") or with_db(server_url(), args.db)
    env_file = write_env_file(url, jwt_secret())
    log(f"cargo lambda watch on http://127.0.0.1:{args.port} (database {url.rsplit('/', 1)[-1]})")
    log(f"HTTP: curl -X POST http://127.0.0.1:{args.port}/lambda-url/{FUNCTION}/jobs -H 'authorization: Bearer …'")
    os.execvpe("cargo", ["cargo", "lambda", "watch", "--invoke-address", "127.0.0.1", "--invoke-port",
                         str(args.port), "--env-file", str(env_file)], env_with_tools())


def cmd_invoke(args):
    ok, answer = invoke(args.port, args.event, jwt_secret())
    print(json.dumps(answer, indent=2) if ok else answer)
    return 0 if ok else 1


def demo_bus():
    """A local EventBridge bus (moto, started by `make demo` through scripts/with-moto.sh) whose one rule
    sends every event of the function to an SQS queue. Returns (env for the function, queue URL)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        log("AWS_ENDPOINT_URL is not set: events stay in batch_events (run `make demo` to see them delivered)")
        return {}, None
    import boto3  # installed with moto[server] in .venv
    events, sqs = boto3.client("events"), boto3.client("sqs")
    bus = "batch-processor-demo"
    try:
        events.create_event_bus(Name=bus)
    except events.exceptions.ResourceAlreadyExistsException:
        pass
    queue = sqs.create_queue(QueueName="batch-processor-demo-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="demo-every-event", EventBusName=bus,
                    EventPattern=json.dumps({"source": ["batch-processor"]}))
    events.put_targets(Rule="demo-every-event", EventBusName=bus, Targets=[{"Id": "demo-queue", "Arn": arn}])
    env = {k: os.environ[k] for k in ["AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                      "AWS_SESSION_TOKEN", "AWS_REGION"] if k in os.environ}
    env["EVENT_BUS_NAME"] = bus
    log(f"local EventBridge bus {bus} at {endpoint}; every event also goes to an SQS queue")
    return env, queue


def read_queue(queue, most=50):
    import boto3
    sqs = boto3.client("sqs")
    out = []
    while len(out) < most:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            break
        for m in got:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    return out


def cmd_demo(args):
    secret = jwt_secret()
    url = fresh_database("batch_processor_demo")
    bus_env, queue = demo_bus()
    env_file = write_env_file(url, secret, bus_env)
    port = free_port()
    show = lambda title, value: print(f"\n=== {title}\n{json.dumps(value, indent=2)}", flush=True)
    log(f"starting cargo lambda watch on 127.0.0.1:{port} (first build may take a few minutes)")
    with Watch(port, env_file, ROOT / "target" / "demo-watch.log"):
        ok, answer = invoke(port, EVENTS / "migrate.json", secret)
        if not ok:
            raise SystemExit(f"migrate failed: {answer}")
        show("migrate (events/migrate.json)", answer)
        psql(url, "-f", str(ROOT / "scripts" / "demo-seed.sql"))
        log("seeded: 3 suppliers, 7 batches (every tier), 6 orders")
        for name in ["orchestrate-dry-run.json", "orchestrate.json", "process-order.json"]:
            ok, answer = invoke(port, EVENTS / name, secret)
            show(f"{name} through cargo lambda invoke", answer)
        status, _, body = http(port, "POST", "/jobs", {"jobType": "orchestrate", "data": {"dryRun": True}},
                               {"authorization": f"Bearer {admin_token(secret)}"})
        show(f"POST /lambda-url/{FUNCTION}/jobs (HTTP {status})", body)
        if queue:
            delivered = read_queue(queue)
            print(f"\n=== {len(delivered)} events arrived through EventBridge; the first five:", flush=True)
            for e in delivered[:5]:
                print(json.dumps({"detail-type": e.get("detail-type"), "detail": e.get("detail")}), flush=True)
    log(f"stopped cargo lambda watch; the demo database stays: {url}")
    return 0


def cmd_e2e(args):
    """Every event file through `cargo lambda invoke`, plus HTTP through the function URL."""
    secret = "e2e-jwt-secret-of-a-reasonable-length!"
    url = fresh_database(f"bp_e2e_{os.getpid()}")
    env_file = write_env_file(url, secret, {"CORS_ALLOW_ORIGIN": "https://shop.example.com"})
    port = free_port()
    passed, failed = 0, 0

    def check(name, condition, detail=""):
        nonlocal passed, failed
        if condition:
            passed += 1
            print(f"ok   {name}", flush=True)
        else:
            failed += 1
            print(f"FAIL {name}: {detail}", flush=True)

    def ev(name):
        ok, answer = invoke(port, EVENTS / name, secret)
        if not ok:
            check(name, False, answer)
            return None
        return answer

    expectations = event_expectations()
    on_disk = sorted(p.name for p in EVENTS.glob("*.json"))
    check("every file in events/ has an expectation", sorted(expectations) == on_disk,
          f"files {on_disk} vs expectations {sorted(expectations)}")

    log(f"starting cargo lambda watch on 127.0.0.1:{port}")
    with Watch(port, env_file, ROOT / "target" / "e2e-watch.log"):
        for name, expect in expectations.items():
            if name == "orchestrate-dry-run.json":
                psql(url, "-f", str(ROOT / "scripts" / "demo-seed.sql"))
            answer = ev(name)
            if answer is not None:
                try:
                    check(name, expect(answer), json.dumps(answer)[:600])
                except (KeyError, TypeError, IndexError) as e:
                    check(name, False, f"{e!r}: {json.dumps(answer)[:600]}")

        ok, answer = invoke(port, EVENTS / "review-batch.json", secret)
        check("a failed invocation is a Lambda error carrying the JSON error",
              not ok and '"error":"Batch is confirmed, not needs_review"' in answer.replace("\n", "").replace("  ", ""),
              answer)

        admin = {"authorization": f"Bearer {admin_token(secret)}"}
        status, headers, body = http(port, "POST", "/jobs", {"jobType": "orchestrate", "data": {"dryRun": True}}, admin)
        check("POST through the function URL", status == 200 and body["success"]
              and headers.get("content-type") == "application/json", f"{status} {body}")
        status, _, body = http(port, "POST", "/jobs", {"jobType": "orchestrate"})
        check("no token through the function URL is a 401", status == 401 and body["error"] == "Missing bearer token",
              f"{status} {body}")
        status, _, body = http(port, "POST", "/jobs", {"jobType": "migrate"}, admin)
        check("migrate over HTTP is a 403", status == 403, f"{status} {body}")
        status, _, body = http(port, "GET", "/jobs", None, admin)
        check("GET is a 405", status == 405, f"{status} {body}")

    psql(with_db(url, "postgres"), "-c", f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[-1]}" WITH (FORCE)')
    print(f"e2e: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


class RuntimeApi:
    """The Lambda Runtime API, as much of it as a function uses: the bootstrap long-polls
    `GET /2018-06-01/runtime/invocation/next` and posts each answer (or error) back."""

    def __init__(self):
        import queue
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        self.pending, self.answers = queue.Queue(), {}
        self.done = threading.Condition()
        self.init_error = None
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if not self.path.endswith("/runtime/invocation/next"):
                    return self.send_error(404)
                request_id, event, deadline_ms = api.pending.get()
                body = json.dumps(event).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(deadline_ms))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                                 "arn:aws:lambda:us-east-1:123456789012:function:batch-processor")
                self.send_header("Lambda-Runtime-Trace-Id",
                                 f"Root=1-{int(time.time()):08x}-{request_id[:24]};Sampled=0")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = self.path.split("/")
                if self.path.endswith("/init/error"):
                    api.init_error = body.decode(errors="replace")
                elif len(parts) >= 6 and parts[-1] in ("response", "error"):
                    with api.done:
                        api.answers[parts[-2]] = (parts[-1] == "response", body.decode(errors="replace"))
                        api.done.notify_all()
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(self, event, timeout=120):
        """(ok, answer as JSON or error text), as Lambda would hand them to the caller."""
        import uuid
        request_id = str(uuid.uuid4())
        self.pending.put((request_id, event, int(time.time() * 1000) + timeout * 1000))
        with self.done:
            if not self.done.wait_for(lambda: request_id in self.answers or self.init_error, timeout):
                return False, "no answer in time"
            if self.init_error and request_id not in self.answers:
                return False, f"init error: {self.init_error}"
            ok, body = self.answers.pop(request_id)
        return ok, json.loads(body) if ok else body


def cmd_artifact(args):
    """The artifact `sam build` made, started the way Lambda starts it (a Runtime API of ours), with the
    template's environment: credentials from a local Secrets Manager, events to a local EventBridge."""
    bootstrap = Path(args.bootstrap).resolve()
    if not os.access(bootstrap, os.X_OK):
        raise SystemExit(f"{bootstrap} is not an executable: run `make package` first")
    if not os.environ.get("AWS_ENDPOINT_URL"):
        raise SystemExit("AWS_ENDPOINT_URL is not set: run through scripts/with-moto.sh (make artifact-e2e)")
    import boto3
    secret_value = "artifact-e2e-jwt-secret-of-a-reasonable-length!"
    url = fresh_database(f"bp_artifact_{os.getpid()}")
    scheme, _, rest = url.partition("://")
    authority, _, dbname = rest.partition("/")
    userinfo, _, hostport = authority.rpartition("@")
    host, _, port = hostport.partition(":")
    user = userinfo.split(":")[0] or "postgres"
    secret_name = f"batch-processor/artifact-e2e/{os.getpid()}"
    secret_arn = boto3.client("secretsmanager").create_secret(Name=secret_name, SecretString=json.dumps({
        "engine": "postgres", "host": host, "port": int(port or 5432), "username": user,
        "password": "trust-auth-ignores-it", "dbname": dbname.split("?")[0], "jwtSecret": secret_value}))["ARN"]
    bus = f"batch-processor-artifact-{os.getpid()}"
    boto3.client("events").create_event_bus(Name=bus)
    api = RuntimeApi()
    # The variables a deploy of template.yaml gives the function — its transforms run on the template
    # (scripts/cfn_template.py), every parameter at its default but the secret and the origin — with the
    # stack's bus replaced by the local one, plus what Lambda itself sets.
    from cfn_template import cloudformation
    stack = cloudformation(ROOT / "template.yaml", {"DbSecretArn": secret_arn,
                                                    "CorsAllowOrigin": "https://shop.example.com"})
    function, = [r["Properties"] for r in stack["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    variables = dict(function["Environment"]["Variables"])
    if variables.get("EVENT_BUS_NAME") != {"Ref": "EventBus"}:
        raise SystemExit(f"template.yaml: EVENT_BUS_NAME is {variables.get('EVENT_BUS_NAME')!r}, not the stack's bus")
    variables["EVENT_BUS_NAME"] = bus
    unresolved = {k: v for k, v in variables.items() if not isinstance(v, str)}
    if unresolved:
        raise SystemExit(f"template.yaml: variables only known once deployed: {unresolved}")
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k in ("PATH", "HOME")}
    env.update(variables)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.port}", "AWS_LAMBDA_FUNCTION_NAME": FUNCTION,
        "AWS_LAMBDA_FUNCTION_VERSION": "1", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function["MemorySize"]),
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand", "AWS_LAMBDA_LOG_FORMAT": function["LoggingConfig"]["LogFormat"],
        "AWS_LAMBDA_LOG_LEVEL": function["LoggingConfig"]["ApplicationLogLevel"],
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/batch-processor",
        "AWS_LAMBDA_LOG_STREAM_NAME": "artifact-e2e", "LAMBDA_TASK_ROOT": str(bootstrap.parent),
    })
    print(f"artifact-e2e: the template's environment: {', '.join(sorted(variables))}", flush=True)
    log_path = ROOT / "target" / "artifact-e2e.log"
    log_path.parent.mkdir(exist_ok=True)
    passed, failed = 0, 0

    def check(name, condition, detail=""):
        nonlocal passed, failed
        passed, failed = (passed + 1, failed) if condition else (passed, failed + 1)
        print(f"{'ok  ' if condition else 'FAIL'} {name}" + ("" if condition else f": {detail}"), flush=True)

    def ev(name):
        text = (EVENTS / name).read_text()
        text = text.replace("<ADMIN_JWT>", admin_token(secret_value)).replace("<BUYER_JWT>", buyer_token(secret_value))
        return api.invoke(json.loads(text))

    with open(log_path, "w") as out:
        proc = subprocess.Popen([str(bootstrap)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=bootstrap.parent, start_new_session=True)
        try:
            expectations = event_expectations(delivery=True)
            for name, expect in expectations.items():
                if name == "orchestrate-dry-run.json":
                    psql(url, "-f", str(ROOT / "scripts" / "demo-seed.sql"))
                ok, answer = ev(name)
                if not ok:
                    check(name, False, answer)
                    continue
                try:
                    check(name, expect(answer), json.dumps(answer)[:600])
                except (KeyError, TypeError, IndexError) as e:
                    check(name, False, f"{e!r}: {json.dumps(answer)[:600]}")
            ok, answer = ev("review-batch.json")
            check("a failed invocation is a function error carrying the JSON error",
                  not ok and "Batch is confirmed, not needs_review" in answer, answer)
            pending = subprocess.run(["psql", url, "-XAtc",
                                      "SELECT count(*) FROM batch_events WHERE published_at IS NULL"],
                                     capture_output=True, text=True).stdout.strip()
            check("every event was delivered to the local EventBridge", pending == "0", f"{pending} pending")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
    lines = log_path.read_text().splitlines()
    check("the function logs JSON lines", lines and all(l.startswith("{") for l in lines),
          next((l for l in lines if not l.startswith("{")), "no log lines"))
    psql(with_db(url, "postgres"), "-c", f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[-1]}" WITH (FORCE)')
    print(f"artifact-e2e: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    port = int(os.environ.get("LAMBDA_PORT", "9000"))
    w = sub.add_parser("watch")
    w.add_argument("--port", type=int, default=port)
    w.add_argument("--db", default="batch_processor")
    i = sub.add_parser("invoke")
    i.add_argument("event")
    i.add_argument("--port", type=int, default=port)
    sub.add_parser("demo")
    sub.add_parser("e2e")
    a = sub.add_parser("artifact")
    a.add_argument("--bootstrap", default=str(ROOT / ".aws-sam" / "build" / "BatchProcessorFunction" / "bootstrap"))
    args = parser.parse_args()
    return {"watch": cmd_watch, "invoke": cmd_invoke, "demo": cmd_demo, "e2e": cmd_e2e,
            "artifact": cmd_artifact}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
