"""Hot reload of policies: an edit of the configuration file applies without a restart.

Contract: ``PolicyReloader`` watches the configuration file (modification
time, size and inode, every ``interval`` seconds) and listens for SIGHUP.
On a change it re-reads and checks the whole file; valid policies replace the
running ones at once (requests in flight finish under the rules they started
with); an invalid file keeps the last good policies and logs one line per
problem as ``file:line: key.path: message``. Settings other than ``policies``
take effect at the next start (a log line says so when they differ).
Every reload, applied or refused, is a ``ConfigReloaded`` event (audit
trail); new policies that cannot be recorded are not applied (fail closed).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from davbox.audit import AuditUnavailable
from davbox.config import ConfigError, Settings, settings_from_text
from davbox.events import ConfigReloaded, EventBus
from davbox.policies.engine import PolicyEngine
from davbox.policies.registry import build_policies

_log = logging.getLogger("davbox.reload")


class PolicyReloader:
    def __init__(
        self,
        path: Path,
        engine: PolicyEngine,
        settings: Settings,
        interval: float = 1.0,
        events: EventBus | None = None,
    ) -> None:
        self.events = events
        self._trigger = "file"
        self.path = path
        self.engine = engine
        self.settings = settings
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stamp = self._read_stamp()
        self._thread = threading.Thread(target=self._run, name="policy-reload", daemon=True)

    def start(self) -> None:
        """Start watching (call from the main thread: it installs the SIGHUP handler)."""
        signal.signal(signal.SIGHUP, self._on_hangup)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _on_hangup(self, _signum: int, _frame: Any) -> None:
        self._stamp = None  # reload even if the file looks unchanged
        self._trigger = "signal"
        self._wake.set()

    def _read_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            stamp = self._read_stamp()
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                trigger, self._trigger = self._trigger, "file"
                try:
                    self.reload(trigger)
                except Exception:  # the watcher must outlive any bad edit
                    _log.exception("policy reload failed; keeping the current policies")

    def reload(self, trigger: str = "file") -> bool:
        """Re-read the file now; True if new policies are in force."""
        try:
            text = self.path.read_text(encoding="utf-8")
            settings = settings_from_text(text, str(self.path))
        except (OSError, UnicodeDecodeError) as exc:
            _log.error(
                "policy reload refused: %s: %s; keeping the current policies", self.path, exc
            )
            self._record("refused", trigger, problems=1)
            return False
        except ConfigError as exc:
            for problem in exc.problems:
                _log.error("policy reload refused: %s", problem)
            _log.error(
                "keeping the current policies (%d problem(s) in %s)", len(exc.problems), self.path
            )
            self._record("refused", trigger, problems=len(exc.problems))
            return False
        try:
            policies, _ = build_policies(settings.policies, {}, str(self.path))
        except Exception:
            # A third-party policy failing to start must not end hot reload.
            _log.exception("policy reload refused: a policy failed to start; keeping the current")
            self._record("refused", trigger, problems=1)
            return False
        if not self._record("applied", trigger, rules=len(policies)):
            _log.error("policy reload not applied: the audit trail cannot record it")
            return False
        self.engine.replace(policies)
        _log.info("policies reloaded from %s: %d rule(s) in force", self.path, len(policies))
        if settings.model_dump(exclude={"policies"}) != self.settings.model_dump(
            exclude={"policies"}
        ):
            _log.warning(
                "settings other than policies changed in %s: they apply at the next start",
                self.path,
            )
        return True

    def _record(self, outcome: str, trigger: str, *, rules: int = 0, problems: int = 0) -> bool:
        """Emit the reload's event; False if the audit trail could not take it."""
        if self.events is None:
            return True
        try:
            self.events.emit(
                ConfigReloaded(
                    actor="system",
                    actor_kind="system",
                    path=str(self.path),
                    outcome=outcome,
                    trigger=trigger,
                    rules=rules,
                    problems=problems,
                )
            )
        except AuditUnavailable:
            return False
        return True
