"""Syscall fault injection, in process (libfiu's ``fiu-run``, without LD_PRELOAD).

Every syscall on a connection's way goes through a wrapper of ``src/ngx_fault.h``
(``ngxffi_sys_accept4``, ``ngxffi_sys_send``, …): the event core's C (the epoll
module's wait and registrations, the C fast path's recv/send/sendfile/pread, the C
accept handler, the plain-request reads and sends of ``src/ngx_http_parse.c``) and
the Python binding (:mod:`ngxffi.os`, :mod:`ngxffi.event.accept`, the epoll module's
notify eventfd) call the same inline functions, so one rule reaches them all. A rule
says, for one call:

* **what**: fail with an errno (``EMFILE``, ``ECONNABORTED``, ``EINTR``, …: any name
  of the :mod:`errno` module), or be **short**: the length, count or ``maxevents``
  is capped to N before the real call is made, so that a partial write is a real
  partial write and a short ``epoll_wait`` a real smaller batch;
* **when**: the next N calls, or each call with probability p, drawn from one seeded
  splitmix64 stream per process (:func:`seed`): the same seed and the same order of
  calls give the same faults.

Each call counts its hits: the calls its rule applied to (failed, or capped: a call
asking for no more than the cap is counted too, as it used up one of "the next N").
Off, a wrapper
costs one load and a predicted branch (``make bench`` measures it against a build
without the hooks, ``NGXFFI_NO_FAULTS=1``). The state is the process's, in C: a
forked child inherits the rules armed at the fork.

The spec grammar, for ``NGXFFI_INJECT`` and ``ngxffi exhaust --inject``, is
``CALL:WHAT[:WHEN]``: WHAT is an errno name or ``short`` / ``short=N`` (N bytes,
default 1), WHEN an integer N ≥ 1 (the next N calls) or a probability written with a
decimal point (``0.1``, ``1.0``), by default ``1`` (the next call):
``accept4:ECONNABORTED:0.1``, ``send:short=100:5``, ``epoll_wait:EINTR``.

When ngxffi is imported with ``NGXFFI_INJECT`` in the environment (specs separated by
commas) those rules are armed in that process, the stream seeded with
``NGXFFI_INJECT_SEED`` (an integer, default 0); a bad spec there fails the import.
That reaches every process that imports ngxffi — its own servers, ``ngxffi serve``,
apps on ngxffi — and no other: a foreign server needs fiu-run's LD_PRELOAD.

What is *not* covered: calls made by the standard library (``socket``, ``os``) and by
other extensions, and ``ngxffi.probe``'s raw probes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import decimal
import errno as _errno
import math
import os as _os
from collections.abc import Iterator, Mapping

from ngxffi._ngx import ffi, lib

#: The calls a rule can be armed on, in the order of src/ngx_fault.h's enum.
#: ``openat`` stands for openat(2) and openat2(2) (static files open with either).
CALLS: tuple[str, ...] = (
    "accept4",
    "accept",
    "recv",
    "read",
    "readv",
    "pread",
    "send",
    "write",
    "writev",
    "sendfile",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "eventfd",
    "openat",
)

#: The calls a ``short`` rule applies to: those with a length (``maxevents`` for the
#: two waits; at most 64 buffers of a short readv/writev are passed on).
SHORTABLE: frozenset[str] = frozenset(CALLS) - {
    "accept4",
    "accept",
    "epoll_ctl",
    "eventfd",
    "openat",
}

#: The errnos the event core has an answer for that Linux will not produce on
#: demand, and what nginx does on each (any other name of :mod:`errno` is accepted).
ERRNOS: dict[str, str] = {
    "EMFILE": "accept: logged crit, accept events disabled for accept_mutex_delay "
    "(ngx_event_accept)",
    "ENFILE": "accept: as EMFILE",
    "ECONNABORTED": "accept: logged error, the loop goes on while `available`",
    "ENOBUFS": "accept: logged alert, the loop ends; send: the connection errs, closed",
    "EINTR": "any call: retried (ngx_unix_recv, ngx_unix_send), or the wait returns "
    "and the cycle goes round (ngx_epoll_process_events logs it at info)",
    "EAGAIN": "accept: the backlog is empty; recv/send: wait for the next event",
    "EPIPE": "send: the peer is gone, the connection closes",
    "ENOMEM": "accept: logged alert, the loop ends; allocation failures close",
}

_IDS: dict[str, int] = {
    name: getattr(lib, f"NGXFFI_SYS_{name.upper()}") for name in CALLS
}
assert sorted(_IDS.values()) == list(range(lib.NGXFFI_SYS_N)), "CALLS and the enum"

ENV_SPECS = "NGXFFI_INJECT"
ENV_SEED = "NGXFFI_INJECT_SEED"


def _valid(kind: str, given: str, choices: object) -> ValueError:
    return ValueError(f"unknown {kind} {given!r}: valid {kind}s are {choices}")


def _call_list() -> str:
    return ", ".join(CALLS)


def _errno_list() -> str:
    return ", ".join(ERRNOS) + " (or any errno name)"


def errno_of(name: str) -> int:
    """The number of an errno name (``"ECONNABORTED"``); ValueError for a name the
    :mod:`errno` module does not know."""
    number = getattr(_errno, name.upper(), None) if name.upper() == name else None
    if not isinstance(number, int) or _errno.errorcode.get(number) is None:
        raise _valid("errno", name, _errno_list())
    return number


@dataclasses.dataclass(frozen=True)
class Rule:
    """One call's rule: fail with ``error`` (an errno number) or be ``short`` (cap the
    length to that many bytes, events for epoll_wait), the next ``times`` calls or
    each with ``probability``. Exactly one of each pair; neither of ``times`` and
    ``probability`` means the next call. ValueError for anything else."""

    call: str
    error: int | None = None
    short: int | None = None
    times: int | None = None
    probability: float | None = None

    def __post_init__(self) -> None:
        if self.call not in _IDS:
            raise _valid("call", self.call, _call_list())
        if (self.error is None) == (self.short is None):
            raise ValueError(f"{self.call}: give an errno or a short count, not both")
        if self.error is not None and (
            not _is_int(self.error) or self.error not in _errno.errorcode
        ):
            raise ValueError(f"{self.call}: no errno {self.error!r}")
        if self.short is not None:
            if self.call not in SHORTABLE:
                raise ValueError(
                    f"{self.call} has no length to make short: short applies to "
                    f"{', '.join(c for c in CALLS if c in SHORTABLE)}"
                )
            if not _is_int(self.short) or not 1 <= self.short < _COUNT_MAX:
                raise ValueError(
                    f"{self.call}: short=N needs N in [1, 2**62), not {self.short}"
                )
        if self.times is not None and self.probability is not None:
            raise ValueError(
                f"{self.call}: the next N calls or a probability, not both"
            )
        if self.times is None and self.probability is None:
            object.__setattr__(self, "times", 1)
        if self.times is not None and (
            not _is_int(self.times) or not 1 <= self.times < _COUNT_MAX
        ):
            raise ValueError(
                f"{self.call}: the next N calls needs N in [1, 2**62), not {self.times}"
            )
        p = self.probability
        if p is not None and not (isinstance(p, float | int) and 0 <= p <= 1):
            raise ValueError(f"{self.call}: a probability is within [0, 1], not {p}")

    @property
    def spec(self) -> str:
        """The rule in the grammar :func:`parse` reads."""
        what = _errno.errorcode[self.error] if self.error else f"short={self.short}"
        when = (
            str(self.times)
            if self.times is not None
            else _probability_text(float(self.probability or 0))
        )
        return f"{self.call}:{what}:{when}"


_COUNT_MAX = 1 << 62  # the C's counts are int64_t


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _probability_text(p: float) -> str:
    """``p`` with a decimal point and no exponent (``1e-05`` would read as no
    probability), exactly enough digits to read back the same float."""
    text = format(decimal.Decimal(repr(p)), "f")  # repr's digits, written out
    return text if "." in text else text + ".0"


def parse(spec: str) -> Rule:
    """The rule of one ``CALL:WHAT[:WHEN]`` spec (the module docstring's grammar).
    ValueError says what is wrong and lists the valid calls or errnos."""
    parts = spec.strip().split(":")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise ValueError(
            f"bad fault spec {spec!r}: CALL:WHAT[:WHEN], e.g. "
            "accept4:ECONNABORTED:0.1, "
            "send:short=100:5, epoll_wait:EINTR"
        )
    call, what = parts[0], parts[1]
    if call not in _IDS:
        raise _valid("call", call, _call_list())
    error = short = None
    if what == "short" or what.startswith("short="):
        count = what.partition("=")[2] or "1"
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"bad short count in {spec!r}: short=N with N >= 1 bytes")
        short = int(count)
    else:
        error = errno_of(what)
    times = probability = None
    if len(parts) == 3:
        when = parts[2]
        try:
            if "." in when:
                probability = float(when)
                if math.isnan(probability) or not 0 <= probability <= 1:
                    raise ValueError(when)
            else:
                times = int(when)
                if times < 1:
                    raise ValueError(when)
        except ValueError:
            raise ValueError(
                f"bad WHEN {when!r} in {spec!r}: an integer N >= 1 (the next N calls) "
                "or a probability with a decimal point in [0, 1] (0.1, 1.0)"
            ) from None
    return Rule(call, error, short, times, probability)


def parse_all(specs: str) -> list[Rule]:
    """The rules of specs separated by commas (``NGXFFI_INJECT``'s form), one per
    call: ValueError for a call given twice."""
    rules = [parse(spec) for spec in specs.split(",") if spec.strip()]
    calls = [rule.call for rule in rules]
    for call in calls:
        if calls.count(call) > 1:
            raise ValueError(f"{call} has more than one rule in {specs!r}")
    return rules


def _id(call: str) -> int:
    if call not in _IDS:
        raise _valid("call", call, _call_list())
    return _IDS[call]


def _check(r: int) -> None:
    if r < 0:
        raise OSError(ffi.errno, f"ngxffi_fault_set: {_os.strerror(ffi.errno)}")


def _set(call: str, raw: object) -> None:
    _check(lib.ngxffi_fault_set(_id(call), raw))


def _get(call: str) -> object:
    raw = ffi.new("ngxffi_fault_rule_t *")
    _check(lib.ngxffi_fault_get(_id(call), raw))
    return raw


def arm(rule: Rule | str) -> None:
    """Arm ``rule`` (or a spec) on its call, its hit counter back to 0, in place of
    any rule the call had. RuntimeError in a build without the hooks."""
    if isinstance(rule, str):
        rule = parse(rule)
    if not lib.ngxffi_fault_compiled():
        raise RuntimeError("this ngxffi was built with NGXFFI_NO_FAULTS: no injection")
    raw = ffi.new("ngxffi_fault_rule_t *")
    raw.active = 1
    raw.err = rule.error or 0
    raw.short_n = rule.short or 0
    raw.times = rule.times or 0
    raw.probability = float(rule.probability or 0.0)
    _set(rule.call, raw)


def disarm(call: str | None = None) -> None:
    """Disarm ``call``'s rule, or every call's; their hit counters back to 0."""
    raw = ffi.new("ngxffi_fault_rule_t *")
    _check(lib.ngxffi_fault_set(-1 if call is None else _id(call), raw))


def hits(call: str) -> int:
    """How many calls of ``call`` its rule applied to since it was armed."""
    return int(_get(call).hits)  # type: ignore[attr-defined]


def armed() -> list[Rule]:
    """The rules armed now (a "next N" rule with the calls it has left)."""
    rules = []
    for call in CALLS:
        raw = _get(call)
        if not raw.active:  # type: ignore[attr-defined]
            continue
        err, short_n = raw.err or None, raw.short_n or None  # type: ignore[attr-defined]
        times = raw.times or None  # type: ignore[attr-defined]
        p = None if times else float(raw.probability)  # type: ignore[attr-defined]
        rules.append(Rule(call, err, short_n, times, p))
    return rules


def seed(n: int) -> None:
    """Seed the stream the probabilities draw from (0 ≤ n < 2**64)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 1 << 64:
        raise ValueError(f"a seed is an integer in [0, 2**64), not {n!r}")
    lib.ngxffi_fault_seed(n)


class Injection:
    """What :func:`inject` yields: the rule, and ``hits``, the calls it failed or
    shortened (counted live inside the ``with``, kept after it)."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self._final: int | None = None

    @property
    def hits(self) -> int:
        return hits(self.rule.call) if self._final is None else self._final


@contextlib.contextmanager
def inject(
    call_or_rule: str | Rule,
    error: int | str | None = None,
    *,
    short: int | None = None,
    times: int | None = None,
    probability: float | None = None,
    seed: int | None = None,
) -> Iterator[Injection]:
    """Arm one rule for the ``with`` block, then give its call back the rule (and hit
    count) it had before. ``call_or_rule`` is a call name (with ``error``, an errno
    number or name, or ``short``; ``times`` or ``probability``), a :class:`Rule`, or
    a spec; ``seed`` seeds the stream first::

        with faults.inject("accept4", "ECONNABORTED", times=2) as fault:
            ...  # the next two accept4 calls fail
        assert fault.hits == 2
    """
    if isinstance(call_or_rule, Rule):
        rule = call_or_rule
    elif ":" in call_or_rule:
        rule = parse(call_or_rule)
    else:
        err = errno_of(error) if isinstance(error, str) else error
        rule = Rule(call_or_rule, err, short, times, probability)
    before = _get(rule.call)
    if seed is not None:
        _seed(seed)
    arm(rule)
    injection = Injection(rule)
    try:
        yield injection
    finally:
        injection._final = hits(rule.call)
        _set(rule.call, before)


_seed = seed


def environment(rules: list[Rule | str], seed: int = 0) -> dict[str, str]:
    """The variables that arm ``rules`` (Rules or specs) in a child that imports
    ngxffi, seeded with ``seed``: what ``ngxffi exhaust --inject`` adds to its
    server's environment. ValueError for a bad spec or seed, or a call given twice."""
    parsed = [parse(r) if isinstance(r, str) else r for r in rules]
    specs = ",".join(rule.spec for rule in parsed)
    parse_all(specs)  # one rule per call
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64:
        raise ValueError(f"a seed is an integer in [0, 2**64), not {seed!r}")
    return {ENV_SPECS: specs, ENV_SEED: str(seed)}


def from_environment(environ: Mapping[str, str] = _os.environ) -> list[Rule]:
    """Arm the rules of ``NGXFFI_INJECT`` (seeded by ``NGXFFI_INJECT_SEED``, default
    0); the rules armed. ValueError naming the variable for a bad value. Run when
    ngxffi is imported."""
    specs = environ.get(ENV_SPECS, "")
    if not specs.strip():
        return []
    try:
        rules = parse_all(specs)
    except ValueError as e:
        raise ValueError(f"{ENV_SPECS}={specs!r}: {e}") from None
    text = environ.get(ENV_SEED, "0").strip() or "0"
    try:
        seed(int(text, 0))
    except ValueError:
        raise ValueError(f"{ENV_SEED}={text!r}: not an integer in [0, 2**64)") from None
    for rule in rules:
        arm(rule)
    return rules


__all__ = [
    "CALLS",
    "ENV_SEED",
    "ENV_SPECS",
    "ERRNOS",
    "SHORTABLE",
    "Injection",
    "Rule",
    "arm",
    "armed",
    "disarm",
    "environment",
    "errno_of",
    "from_environment",
    "hits",
    "inject",
    "parse",
    "parse_all",
    "seed",
]


from_environment()  # the hook: NGXFFI_INJECT arms this process's rules at import
