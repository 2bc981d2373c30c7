"""A real Airflow 3 for the local stack: API server, scheduler and DAG processor on loopback
(and a triggerer, for deferrable tasks and asset watchers, when asked for).

Airflow runs from its own virtual environment (`.venv-airflow`: its pins clash with the Function
App's); this module only starts its processes and talks to it over HTTP with
`apache-airflow-client` from the bridge's environment. Metadata lives in SQLite under `home` (a
copy of a migrated template cached under `.stack/cache/`), or in a PostgreSQL database for bursty
work, where SQLite's single writer lock makes Airflow answer 500.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlparse

from bridge.local.process import Lifecycle, Service, ServiceFailed, free_port, loopback_http

if TYPE_CHECKING:
    from airflow_client.client import ApiClient, DAGRunResponse

    from bridge.adapters.airflow import AirflowRest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO / ".venv-airflow"
CACHE = REPO / ".stack" / "cache"
POSTGRES_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
# The bridge's own user. With the simple auth manager, "op" is the least role that may post asset
# events (3.3.2: asset writes need op, DAG run triggers need user); see docs/airflow-identity.md.
BRIDGE_USER = "bridge"
BRIDGE_ROLE = "op"
AUTHOR_USER = "author"
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
# The shipped auth managers that also take the bridge's Entra ID token (bridge.provider.entra).
ENTRA_AUTH_MANAGERS = {
    "simple": "bridge.provider.entra.simple.EntraSimpleAuthManager",
    "fab": "bridge.provider.entra.fab.EntraFabAuthManager",
}
# Airflow's public API tokens get an audience of their own when Entra tokens are taken too, as
# the docs advise: none of the three kinds of token can pass for another.
PUBLIC_API_AUDIENCE = "urn:airflow.apache.org:public-api"
HEALTHY_COMPONENTS = ("metadatabase", "scheduler", "dag_processor")

# Databases made by fresh_postgres_database: LocalAirflow.stop drops these and no others.
_DISPOSABLE_DATABASES: set[str] = set()


def airflow_version(venv: Path = DEFAULT_VENV) -> str:
    """The Airflow version installed in `venv`, read from its package metadata (no import)."""
    found = sorted(venv.glob("lib/python*/site-packages/apache_airflow_core-*.dist-info"))
    if not found:
        raise FileNotFoundError(
            f"no Airflow in {venv}: create it with `make setup` (python3 -m venv .venv-airflow && "
            '.venv-airflow/bin/pip install "apache-airflow[postgres]==3.3.2" ...)'
        )
    return found[-1].name.removeprefix("apache_airflow_core-").removesuffix(".dist-info")


def fresh_postgres_database(prefix: str, *, venv: Path = DEFAULT_VENV) -> str:
    """Create an empty, uniquely named database on the local PostgreSQL; its SQLAlchemy URL.

    LocalAirflow drops it when it stops. Runs psycopg2 from Airflow's environment in a
    subprocess, so the bridge's own environment needs no PostgreSQL driver.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", prefix):
        raise ValueError(
            f"database prefix {prefix!r} must be 1-40 characters of a-z, 0-9 and _, "
            "starting with a letter"
        )
    name = f"{prefix}_{secrets.token_hex(4)}"
    _postgres_admin(f'CREATE DATABASE "{name}"', venv)
    url = f"{POSTGRES_SERVER}/{name}"
    _DISPOSABLE_DATABASES.add(url)
    return url


def drop_postgres_database(url: str, *, venv: Path = DEFAULT_VENV) -> None:
    name = urlparse(url).path.lstrip("/")
    _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', venv)
    _DISPOSABLE_DATABASES.discard(url)


def postgres_database_exists(url: str, *, venv: Path = DEFAULT_VENV) -> bool:
    name = urlparse(url).path.lstrip("/")
    rows = _postgres_admin("SELECT 1 FROM pg_database WHERE datname = %s", venv, name)
    return rows != "[]"


def _postgres_admin(statement: str, venv: Path, *parameters: str) -> str:
    """Run one statement on the server's `postgres` database, with its %s parameters bound by the
    driver; its rows as JSON (or "[]")."""
    script = (
        "import json, sys, psycopg2\n"
        "conn = psycopg2.connect(host='127.0.0.1', port=5432, user='postgres', dbname='postgres')\n"
        "conn.autocommit = True\n"
        "cursor = conn.cursor()\n"
        "cursor.execute(sys.argv[1], sys.argv[2:] or None)\n"
        "print(json.dumps(cursor.fetchall() if cursor.description else []))\n"
    )
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script, statement, *parameters],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"PostgreSQL refused {statement!r}: {done.stderr.strip()[-800:]}")
    return done.stdout.strip()


class LocalAirflow(Lifecycle):
    """Airflow 3 on a fresh loopback port, its three (or four) servers each in its own process
    group."""

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        *,
        port: int = 0,
        database_url: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        venv: Path = DEFAULT_VENV,
        username: str = "admin",
        password: str | None = None,
        bridge_password: str | None = None,
        triggerer: bool = False,
        auth_manager: str = "simple",
        entra: Mapping[str, str] | None = None,
    ) -> None:
        self.home = home.resolve()
        self.dags_folder = dags_folder.resolve()
        self.requested_port = port
        self.port = port
        self.database_url = database_url or f"sqlite:///{self.home / 'airflow.db'}"
        self.extra_env = dict(extra_env or {})
        self.venv = venv
        self.username = username
        # A fresh password per Airflow: nothing to guess, nothing to commit.
        self.password = password or secrets.token_urlsafe(12)
        # The accounts: `username` is the admin that drives the stack (tests, the demo, the UI);
        # the bridge signs in as its own least-privileged user, so a permission the bridge lacks
        # fails here as it would in production; a DAG author may trigger DAGs and nothing more.
        self.accounts: dict[str, tuple[str, str]] = {
            username: ("admin", self.password),
            BRIDGE_USER: (BRIDGE_ROLE, bridge_password or secrets.token_urlsafe(12)),
            AUTHOR_USER: ("user", secrets.token_urlsafe(12)),
        }
        self.triggerer = triggerer  # also run `airflow triggerer` (asset watchers, deferral)
        # "simple" (Airflow's default; the accounts above) or "fab" (Flask AppBuilder: roles and
        # permissions in the metadata database; only the admin account is made, in `start`).
        self.auth_manager = auth_manager
        # With `entra` (its `[azureml_bridge]` options, `LocalIdentity.airflow_options`), the auth
        # manager is the shipped one that also takes Entra ID tokens from that tenant.
        self.entra = dict(entra) if entra is not None else None
        self.trigger_log_port = 0  # the triggerer's log server, chosen on start
        self.started_in: float | None = None  # seconds from start() to healthy
        self._services: list[Service] = []
        self._rest: AirflowRest | None = None
        # Airflow's JWT secret, new on every start (and API server restart): a token of the last
        # start's no longer verifies, as in a deployment whose secret is not pinned.
        self._jwt_secret = ""

    @property
    def bridge_password(self) -> str:
        return self.accounts[BRIDGE_USER][1]

    def password_of(self, user: str) -> str:
        return self.accounts[user][1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def passwords_file(self) -> Path:
        """The simple auth manager's users and passwords, written before every start."""
        return self.home / "passwords.json"

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return bool(self._services)

    @property
    def process_groups(self) -> list[int]:
        """The process group of each running server (its leader's pid)."""
        return [s.process.pid for s in self._services if s.process is not None]

    @property
    def named_process_groups(self) -> dict[str, int]:
        """Each running server's process group by its name (`api-server`, `scheduler`, ...)."""
        return {s.name: s.process.pid for s in self._services if s.process is not None}

    def start(self, timeout: float = 120) -> Self:
        if self.running:
            raise RuntimeError(f"Airflow in {self.home} is already running at {self.base_url}")
        began = time.monotonic()
        self.port = self.requested_port or free_port()  # a dying server may still hold the old one
        self.trigger_log_port = free_port() if self.triggerer else 0
        self._rest = None
        self.home.mkdir(parents=True, exist_ok=True)
        self._jwt_secret = _jwt_secret()
        self.passwords_file.write_text(
            json.dumps({name: password for name, (_, password) in self.accounts.items()})
        )
        env = self.environment()
        try:
            self._prepare_database(env, timeout)
            if self.auth_manager == "fab":
                self._fab_admin()
            self._services = [
                Service(name, [self._airflow, name], log=self.logs / f"{name}.log", env=env,
                        cwd=self.home).start()
                for name in self._server_names
            ]  # fmt: skip
            self._wait_healthy(began + timeout)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def stop_api(self) -> None:
        """Stop only the API server (an outage, as the bridge sees it); `start_api` restarts it."""
        for service in self._services:
            if service.name == "api-server":
                service.stop(grace=5)

    def start_api(self, timeout: float = 60) -> None:
        """Start the API server again on the same port, and wait until it is healthy."""
        self._jwt_secret = _jwt_secret()
        env = self.environment()
        began = time.monotonic()
        self._services = [
            Service("api-server", [self._airflow, "api-server"], log=self.logs / "api-server.log",
                    env=env, cwd=self.home).start()
            if service.name == "api-server" else service
            for service in self._services
        ]  # fmt: skip
        self._wait_healthy(began + timeout)

    def stop(self) -> None:
        services, self._services = self._services, []
        # Stopped together: each may take seconds to drain, and they do not depend on each other.
        with ThreadPoolExecutor(max(1, len(services))) as pool:
            list(pool.map(lambda service: service.stop(grace=10), services))
        if self.database_url in _DISPOSABLE_DATABASES:
            drop_postgres_database(self.database_url, venv=self.venv)

    def __enter__(self) -> Self:
        # `with LocalAirflow(...)` starts it; `with airflow.start()` keeps the running one.
        return self if self.running else self.start()

    def environment(self) -> dict[str, str]:
        """What every Airflow process of one start sees."""
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("AIRFLOW") and name not in ("VIRTUAL_ENV", "PYTHONPATH")
        }
        return {
            **inherited,
            "PATH": f"{self.venv / 'bin'}:{inherited.get('PATH', '/usr/bin:/bin')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                f"{name}:{role}" for name, (role, _) in self.accounts.items()
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
            # The API server's audit-log dependency (`log_action`, async) checks a connection out
            # of the synchronous pool on the event loop: with the pool full (5 + 10 by default),
            # that blocks the loop, and every request with it, for `pool_timeout` (30 s). Seen at
            # 16 concurrent asset events. Room for its 40 worker threads and the loop's checkouts.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "40",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret or _jwt_secret(),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs),
            # A new DAG file is listed within 5 s and a changed one re-parsed within 5 s.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "0",
            # Otherwise bundles go to /tmp/airflow, shared by every Airflow on the machine.
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(self.home / "bundles"),
            # Not 8794, every triggerer's default; the API server reads triggerer logs there too.
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.trigger_log_port or 8794),
            **self._auth_manager_environment(),
            **self.extra_env,
        }

    def _auth_manager_environment(self) -> dict[str, str]:
        if self.entra is not None:
            return {
                "AIRFLOW__CORE__AUTH_MANAGER": ENTRA_AUTH_MANAGERS[self.auth_manager],
                "AIRFLOW__API_AUTH__JWT_AUDIENCE": PUBLIC_API_AUDIENCE,
                **self.entra,
            }
        return (
            {"AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER} if self.auth_manager == "fab" else {}
        )

    def cli(self, *args: str, timeout: float = 120) -> str:
        """Run `airflow <args>` against this Airflow; its output, or `ServiceFailed`."""
        done = subprocess.run(
            [self._airflow, *args],
            env=self.environment(),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise ServiceFailed(f"airflow {args[0]} exited with {done.returncode}\n{done.stderr}")
        return done.stdout

    def python(self, script: str, timeout: float = 120) -> str:
        """Run a Python script in Airflow's environment, configured as this Airflow; its output."""
        done = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", script],
            env=self.environment(), cwd=self.home, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise ServiceFailed(f"a script in Airflow's environment failed\n{done.stderr}")
        return done.stdout

    def _fab_admin(self) -> None:
        """The admin account of a FAB Airflow (FAB keeps users in the metadata database)."""
        try:
            # `--password=…`: a generated password may begin with "-", which argparse would
            # take for an option of its own.
            self.cli("users", "create", "--username", self.username, f"--password={self.password}",
                     "--role", "Admin", "--firstname", "Local", "--lastname", "Admin",
                     "--email", f"{self.username}@example.invalid")  # fmt: skip
        except ServiceFailed as exc:
            if "already exist" not in str(exc):  # a restart: the database kept the account
                raise

    @property
    def _server_names(self) -> tuple[str, ...]:
        servers = ("api-server", "scheduler", "dag-processor")
        return (*servers, "triggerer") if self.triggerer else servers

    @property
    def _airflow(self) -> str:
        return str(self.venv / "bin" / "airflow")

    def _prepare_database(self, env: Mapping[str, str], timeout: float) -> None:
        if not self.database_url.startswith("sqlite:"):
            self._migrate(env, timeout)
            return
        database = Path(self.database_url.removeprefix("sqlite:///"))
        if not database.exists():
            shutil.copyfile(self._sqlite_template(env, timeout), database)

    def _sqlite_template(self, env: Mapping[str, str], timeout: float) -> Path:
        """A migrated, empty SQLite metadata database, made once per Airflow version."""
        flavour = "-fab" if self.auth_manager == "fab" else ""  # FAB adds its own tables
        template = CACHE / f"airflow-{airflow_version(self.venv)}{flavour}.sqlite"
        if not template.exists():
            CACHE.mkdir(parents=True, exist_ok=True)
            # Migrated under a unique name, then renamed: concurrent starts never see half of it.
            partial = CACHE / f"{template.name}.{secrets.token_hex(4)}.partial"
            try:
                self._migrate({**env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{partial}"},
                              timeout)  # fmt: skip
                partial.replace(template)
            finally:
                partial.unlink(missing_ok=True)
        return template

    def _migrate(self, env: Mapping[str, str], timeout: float) -> None:
        migrate = Service(
            "db-migrate", [self._airflow, "db", "migrate"], log=self.logs / "db-migrate.log",
            env=env, cwd=self.home,
        ).start()  # fmt: skip
        assert migrate.process is not None
        try:
            code = migrate.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            migrate.stop()
            raise ServiceFailed(
                f"airflow db migrate took over {timeout:.0f}s\n{migrate.tail()}"
            ) from exc
        if code != 0:
            raise ServiceFailed(f"airflow db migrate exited with code {code}\n{migrate.tail()}")

    def _wait_healthy(self, deadline: float) -> None:
        last: Mapping[str, Any] | str = "no answer"
        parts = (*HEALTHY_COMPONENTS, "triggerer") if self.triggerer else HEALTHY_COMPONENTS
        while time.monotonic() < deadline:
            for service in self._services:
                service.check_alive()
            last = self.health()
            if isinstance(last, Mapping) and all(
                (last.get(part) or {}).get("status") == "healthy" for part in parts
            ):
                return
            time.sleep(0.25)
        tails = "\n".join(service.tail() for service in self._services)
        raise ServiceFailed(f"Airflow at {self.base_url} not healthy: {last}\n{tails}")

    def health(self) -> Mapping[str, Any] | str:
        """GET /api/v2/monitor/health as JSON, or why there is none."""
        try:
            _, body = loopback_http("GET", f"{self.base_url}/api/v2/monitor/health", timeout=2)
            answer: Mapping[str, Any] = json.loads(body)
            return answer
        except (OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"

    # -- API helpers (apache-airflow-client from the bridge's environment) ----------------------

    def rest(self) -> AirflowRest:
        """The bridge's own adapter, pointed at this Airflow."""
        from bridge.adapters.airflow import AirflowRest

        if self._rest is None:
            self._rest = AirflowRest(self.base_url, self.username, self.password)
        return self._rest

    def client(self) -> ApiClient:
        """An authenticated apache-airflow-client `ApiClient` (token from POST /auth/token)."""
        return self.rest().api_client

    def wait_for_dags(self, dag_ids: Collection[str], timeout: float) -> None:
        """Until every DAG is parsed, registered and unpaused; names import errors otherwise."""
        from airflow_client.client import DAGApi
        from airflow_client.client.exceptions import NotFoundException

        def registered(dag_id: str) -> bool:
            try:
                return not DAGApi(self.client()).get_dag(dag_id).is_paused
            except NotFoundException:
                return False

        missing = list(dag_ids)

        def all_registered() -> bool:
            nonlocal missing
            missing = [dag_id for dag_id in missing if not registered(dag_id)]
            return not missing

        self._poll(all_registered, timeout,
                   lambda: f"DAGs not registered: {missing}; {self.import_errors()}")  # fmt: skip

    def import_errors(self) -> str:
        from airflow_client.client import ImportErrorApi

        errors = ImportErrorApi(self.client()).get_import_errors().import_errors
        return "; ".join(f"{e.filename}: {e.stack_trace}" for e in errors) or "no import errors"

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        from airflow_client.client import DagRunApi, TriggerDAGRunPostBody

        body = TriggerDAGRunPostBody(dag_run_id=run_id, conf=dict(conf or {}), logical_date=None)
        return str(DagRunApi(self.client()).trigger_dag_run(dag_id, body).dag_run_id)

    def clear(self, dag_id: str, run_id: str, task_ids: list[str]) -> None:
        """Clear these task instances of a run, as a person does in the UI (failed or not)."""
        from airflow_client.client import (
            ClearTaskInstancesBody,
            ClearTaskInstancesBodyTaskIdsInner,
            TaskInstanceApi,
        )

        body = ClearTaskInstancesBody(
            dag_run_id=run_id,
            task_ids=[ClearTaskInstancesBodyTaskIdsInner(task_id) for task_id in task_ids],
            only_failed=False,  # its default: a clear of a succeeded task would clear nothing
            dry_run=False,
        )
        TaskInstanceApi(self.client()).post_clear_task_instances(dag_id, body)

    def try_number(self, dag_id: str, run_id: str, task_id: str) -> int:
        from airflow_client.client import TaskInstanceApi

        found = TaskInstanceApi(self.client()).get_task_instance(dag_id, run_id, task_id)
        return int(found.try_number)

    def run_state(self, dag_id: str, run_id: str) -> str:
        from airflow_client.client import DagRunApi

        return str(DagRunApi(self.client()).get_dag_run(dag_id, run_id).state.value)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """The run's terminal state ("success" or "failed")."""
        state = ""

        def terminal() -> bool:
            nonlocal state
            state = self.run_state(dag_id, run_id)
            return state in TERMINAL_RUN_STATES

        self._poll(terminal, timeout, lambda: f"run {dag_id}/{run_id} still {state!r}")
        return state

    def runs(self, dag_id: str) -> list[DAGRunResponse]:
        """The DAG's runs, oldest first (at most 100)."""
        from airflow_client.client import DagRunApi

        page = DagRunApi(self.client()).get_dag_runs(dag_id, order_by=["run_after"], limit=100)
        return list(page.dag_runs)

    def wait_for_runs(self, dag_id: str, count: int, timeout: float) -> list[DAGRunResponse]:
        """Until the DAG has at least `count` runs, all of them terminal."""
        found: list[DAGRunResponse] = []

        def settled() -> bool:
            nonlocal found
            found = self.runs(dag_id)
            return len(found) >= count and all(
                run.state.value in TERMINAL_RUN_STATES for run in found
            )

        self._poll(settled, timeout, lambda: f"{dag_id} runs: {[r.state.value for r in found]}")
        return found

    def xcom(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        key: str = "return_value",
        map_index: int = -1,
    ) -> Any:
        """A task's XCom value, deserialized by Airflow."""
        from airflow_client.client import XComApi

        entry = XComApi(self.client()).get_xcom_entry(
            dag_id, task_id, run_id, key, map_index=map_index
        )
        return entry.actual_instance.value  # type: ignore[union-attr]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        from airflow_client.client import TaskInstanceApi

        log = TaskInstanceApi(self.client()).get_log(
            dag_id, run_id, task_id, try_number, full_content=True
        )
        lines = log.content.actual_instance or []
        return "\n".join(line if isinstance(line, str) else line.event for line in lines)

    @staticmethod
    def _poll(done: Callable[[], bool], timeout: float, why: Callable[[], str]) -> None:
        from airflow_client.client.exceptions import ServiceException

        deadline = time.monotonic() + timeout
        while True:
            try:
                if done():
                    return
            except ServiceException:
                pass  # SQLite-backed Airflow answers 500 now and then while tasks write: ask again
            if time.monotonic() >= deadline:
                raise TimeoutError(f"after {timeout:.0f}s: {why()}")
            time.sleep(0.25)


def _jwt_secret() -> str:
    # 64 bytes: PyJWT warns that a shorter HMAC key is too short for HS512.
    return secrets.token_urlsafe(64)
