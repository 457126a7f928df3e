"""Run one validation in its own process, with a wall-clock limit and an address-space limit.

A hostile PDF can make a parser loop, recurse or allocate without bound. Each validation therefore runs in
a child process forked from a ``forkserver`` that has already imported pyHanko (so a child starts in a
few milliseconds). The child lowers its ``RLIMIT_AS`` before it reads the file; the parent waits at most
``timeout_seconds`` for the result and kills the child after that. The answer is the ``Report`` or the
``QsignError`` of the child, rebuilt in the parent; anything else becomes a ``ValidationCrashed`` error.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import resource
import threading
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from asn1crypto import x509

from qsign.errors import QsignError
from verify_service.errors import ValidationCrashed, ValidationMemoryExceeded, ValidationTimeout
from verify_service.policy import AlgorithmPolicy
from verify_service.report import Report
from verify_service.trust import TrustSettings

__all__ = ["Limits", "verify_isolated"]

_logger = logging.getLogger(__name__)

_context_lock = threading.Lock()
_context: multiprocessing.context.BaseContext | None = None


@dataclass(frozen=True)
class Limits:
    """Limits of one validation process."""

    timeout_seconds: float = 60.0
    memory_mb: int = 1024


def _get_context() -> multiprocessing.context.BaseContext:
    global _context
    with _context_lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["verify_service.validate"])
            _context = context
        return _context


def _trust_state(trust: TrustSettings) -> dict[str, Any]:
    # asn1crypto objects are passed as DER, so that the child gets exactly the same certificates.
    return {"anchors": [certificate.dump() for certificate in trust.anchors],
            "intermediates": [certificate.dump() for certificate in trust.intermediates],
            "source": trust.source, "online": trust.online, "revocation_mode": trust.revocation_mode}


def _trust_from_state(state: dict[str, Any]) -> TrustSettings:
    return TrustSettings(anchors=tuple(x509.Certificate.load(der) for der in state["anchors"]),
                         intermediates=tuple(x509.Certificate.load(der) for der in state["intermediates"]),
                         source=state["source"], online=state["online"],
                         revocation_mode=state["revocation_mode"])


def _child(connection: Connection, memory_bytes: int, arguments: dict[str, Any]) -> None:
    """Body of the validation process: limit memory, validate, send the report or the error."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # pyHanko logs each failed certificate check as a warning with a traceback, which the child would
    # print to the user's terminal; the report carries the outcome and its reasons instead.
    logging.getLogger("pyhanko").setLevel(logging.ERROR)
    try:
        from verify_service.validate import verify_file

        arguments["trust"] = _trust_from_state(arguments["trust"])
        report = verify_file(**arguments)
        connection.send(("report", report))
    except QsignError as error:
        error_class = type(error)
        connection.send(("error", f"{error_class.__module__}:{error_class.__qualname__}",
                         error.message_template, {key: str(value) for key, value in error.params.items()},
                         {key: str(value) for key, value in error.ids.items()}))
    except MemoryError:
        connection.send(("memory",))
    except BaseException as exc:  # noqa: BLE001  (reported to the parent, which logs it)
        connection.send(("crash", f"{type(exc).__name__}: {exc}"))
    finally:
        connection.close()
    # Skip interpreter teardown (garbage collection of the parsed document, atexit handlers): it took
    # longer than the validation itself, and the parent waits for the exit.
    os._exit(0)


def _rebuild_error(class_path: str, template: str, params: dict[str, str], ids: dict[str, str]) -> QsignError:
    module_name, _, class_name = class_path.partition(":")
    error_class = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(error_class, type) and issubclass(error_class, QsignError)):
        return ValidationCrashed(detail=class_path)
    return error_class(template, ids=ids, **params)


def verify_isolated(path: str | os.PathLike[str], content: str | os.PathLike[str] | None = None,
                    trust: TrustSettings = TrustSettings(), *, name: str | None = None,
                    content_name: str | None = None, policy: AlgorithmPolicy = AlgorithmPolicy(),
                    at: datetime | None = None, limits: Limits = Limits()) -> Report:
    """Do what ``verify_file`` does, in a child process under ``limits``; blocks the calling thread.

    Raises the child's ``QsignError``, or ``ValidationTimeout``, ``ValidationMemoryExceeded`` or
    ``ValidationCrashed``. The child is always gone when this returns.
    """
    display_name = name or os.path.basename(os.fspath(path))
    arguments = {"path": os.fspath(path), "content": os.fspath(content) if content is not None else None,
                 "trust": _trust_state(trust), "name": name, "content_name": content_name, "policy": policy,
                 "at": at}
    context = _get_context()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, limits.memory_mb * 1024 * 1024, arguments),
                              name="qsign-verify-child", daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(limits.timeout_seconds):
            _logger.warning("validation of %s took more than %g s; killing process %s", display_name,
                            limits.timeout_seconds, process.pid)
            raise ValidationTimeout(ids={"file": display_name}, name=display_name,
                                    seconds=f"{limits.timeout_seconds:g}")
        try:
            answer = receiver.recv()
        except (EOFError, OSError) as exc:
            process.join(5)
            _logger.warning("validation process of %s ended without sending a result (exit code %s)", display_name,
                            process.exitcode)
            detail = f"signal {-process.exitcode}" if process.exitcode is not None and process.exitcode < 0 \
                else f"exit code {process.exitcode}"
            raise ValidationCrashed(ids={"file": display_name}, detail=detail) from exc
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join()

    kind = answer[0]
    if kind == "report":
        return answer[1]
    if kind == "error":
        raise _rebuild_error(*answer[1:])
    if kind == "memory":
        _logger.warning("validation of %s exceeded %d MiB", display_name, limits.memory_mb)
        raise ValidationMemoryExceeded(ids={"file": display_name}, name=display_name, limit_mb=limits.memory_mb)
    _logger.error("validation of %s crashed: %s", display_name, answer[1])
    raise ValidationCrashed(ids={"file": display_name}, detail=answer[1])
