"""The reliability campaign: kill -9 batchd again and again; prove nothing lost, nothing paid twice.

    .venv/bin/python bench/chaos.py              # the full campaign (24 kills, 3,000 requests)
    .venv/bin/python bench/chaos.py --short      # 5 kills, 600 requests (runs in make test)
    .venv/bin/python bench/chaos.py --kills 40 --requests 6000 --seed 3 --keep

The emulator runs as its own process (``batchd emulator --state-dir``) with background faults
(retryable and permanent item errors, 429s on create, 5xx on polls, dropped connections on
creates and results). Input files for the three providers go into the inbox a few at a time;
``batchd run`` is a subprocess, killed with SIGKILL at each named crash point (the process dies
there, as in a power cut) and at random moments, and restarted each time. Then SIGTERM is sent
in each phase (start-up, ingest, create in flight, polling, results download, outbox write,
idle): each must be a clean exit within the grace period. Finally batchd runs to the end
(``--once``) and the campaign checks:

* every input line has exactly one result line, with the right status (succeeded, failed for
  the lines the emulator refuses for good, invalid for the bad lines, whose reason names the
  line); whole files that cannot be read get an empty results file and a file_error;
* the emulator's journal shows no item received twice (``duplicate_items``) for OpenAI and
  Gemini; for Anthropic, which takes no batch label, duplicates are reported with the run in
  which they happened.

It prints its figures (``--json`` for one JSON object) and exits non-zero if a promise broke.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the daemon harness is shared with the tests, in tests/
    sys.path.insert(0, str(REPO))

from adapters.facts import PROVIDERS  # noqa: E402
from daemon.crashpoints import AFTER_INGEST_COMMIT, MID_OUTBOX_WRITE, POINTS  # noqa: E402
from tests.daemon_harness import (  # noqa: E402
    DaemonProcess,
    EmulatorProcess,
    crash_at,
    crash_reached,
    wait_until,
)

MODELS = {
    "openai": ("gpt-4o-mini", "gpt-4.1-mini"),
    "anthropic": ("claude-haiku-4-5", "claude-sonnet-4-5"),
    "gemini": ("gemini-2.5-flash", "gemini-2.5-pro"),
}
SIGTERM_PHASES = ("startup", "ingest", "outbox", "create", "poll", "results", "idle")
POISON = "POISON-PILL"  # lines the emulator refuses for good: expected 'failed'
GRACE_S = 5.0

# The daemon's intervals for the campaign (they replace the harness's faster defaults).
DAEMON_CONFIG = f"""
settle_s = 0.2
scan_interval_s = 0.5
batch_linger_s = 0.2
poll_initial_s = 0.1
poll_factor = 1.5
poll_max_s = 0.5
retry_base_s = 0.1
retry_max_s = 1.0
reconcile_after_s = 0.3
request_timeout_s = 5
grace_s = {GRACE_S}
max_attempts = 12
min_free_disk_mb = 0
"""

# Background faults for the whole campaign (seeded: the same campaign misbehaves the same way).
FAULTS: dict[str, Any] = {
    "seed": 7,
    "faults": [
        {"kind": "item_error", "match": POISON, "error": "invalid"},
        {"kind": "item_error", "provider": "openai", "rate": 0.05, "error": "rate_limit"},
        {"kind": "item_error", "provider": "anthropic", "rate": 0.05, "error": "overloaded"},
        {"kind": "item_error", "provider": "gemini", "rate": 0.05, "error": "server"},
        {"kind": "http", "route": "batches.create", "status": 429, "retry_after": 0.2,
         "probability": 0.05},
        {"kind": "http", "route": "batches.get", "status": 503, "probability": 0.03},
        {"kind": "drop", "route": "batches.create", "probability": 0.04},
        {"kind": "drop", "route": "batches.results", "probability": 0.03},
    ],
}  # fmt: skip


def harsh(faults: dict[str, Any]) -> dict[str, Any]:
    """--harsh: four times the request faults, and creates answered after the client timeout
    (unknown outcomes, on top of the dropped ones)."""
    out = [{**f, "probability": min(1.0, 4 * f["probability"])} if "probability" in f else f
           for f in faults["faults"]]  # fmt: skip
    out.append({"kind": "slow", "route": "batches.create", "delay_s": 6, "probability": 0.05})
    return {**faults, "faults": out}


# Bad lines mixed into the input files: (kind, line text, a piece of the reason batchd gives).
BAD_LINES: tuple[tuple[str, str, str], ...] = (
    ("invalid JSON", '{"custom_id": "cut", "model": ', "invalid JSON"),
    ("not an object", "[1, 2, 3]", "expected a JSON object"),
    ("missing model", '{"messages": [{"role": "user", "content": "x"}]}', "'model' is missing"),
    ("empty messages", '{"model": "gpt-4o-mini", "messages": []}', "'messages' is empty"),
    (
        "wrong type",
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}],'
        ' "temperature": "hot"}',
        "must be a number",
    ),
    (
        "out of range",
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}],'
        ' "temperature": 9}',
        "must be between",
    ),
    (
        "unknown model",
        '{"model": "llama-3-70b", "messages": [{"role": "user", "content": "x"}]}',
        "unknown model",
    ),
)
BAD_FILES: tuple[tuple[str, bytes, str], ...] = (
    ("empty file", b"", "no requests"),
    ("blank lines only", b"\n \n\r\n", "no requests"),
    ("binary garbage", bytes(range(256)) * 8, "binary content"),
    ("not UTF-8", "déjà vu\n".encode("latin-1") * 20, "not UTF-8"),
)


# -- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    kills: int
    requests: int
    files: int
    seed: int
    time_scale: float
    kill_timeout_s: float
    final_timeout_s: float
    harsh: bool
    ingest_lines: int  # the big all-invalid file of the ingest and outbox SIGTERM phases

    @classmethod
    def of(cls, args: argparse.Namespace) -> Plan:
        short = args.short
        kills = args.kills or (5 if short else 24)
        return cls(
            kills=kills,
            requests=args.requests or (600 if short else 3000),
            files=args.files or kills + 2,
            seed=args.seed,
            time_scale=args.time_scale,
            kill_timeout_s=40.0,  # a start on a loaded machine can take 30 s
            final_timeout_s=240.0 if short else 900.0,
            ingest_lines=40_000 if short else 100_000,
            harsh=args.harsh,
        )


@dataclass
class Expect:
    """What one input file must come back as: per line, (custom_id, status, reason piece)."""

    name: str
    lines: dict[int, tuple[str, str, str | None]] = field(default_factory=dict)
    file_error: str | None = None
    bad_kind: str | None = None  # for a whole bad file


@dataclass
class RunRecord:
    """One start of the daemon and how it ended."""

    index: int
    how: str  # "SIGKILL at random", "crash point after_create:2", "SIGTERM (poll)", "--once"
    seconds: float
    exit_code: int | None
    reached: bool = True  # a crash point or SIGTERM phase was reached as planned
    duplicates: dict[str, int] = field(default_factory=dict)  # new during this run


# -- input files ---------------------------------------------------------------------------------


def _request(name: str, i: int, model: str, poison: bool) -> dict[str, Any]:
    words = f"{POISON} " if poison else ""
    return {
        "custom_id": f"{name}-{i}",
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": f"{words}{name} question {i}"}],
        "metadata": {"file": name, "i": i},
    }


def _input_file(name: str, n: int, rng: random.Random) -> tuple[bytes, Expect]:
    """``n`` requests over the six models, a few poison pills and one bad line of each kind."""
    expect = Expect(name)
    out: list[str] = []
    bad = list(BAD_LINES)
    rng.shuffle(bad)
    bad_at = set(rng.sample(range(n), min(len(bad), n)))
    models = [m for p in PROVIDERS for m in MODELS[p]]
    for i in range(n):
        if i in bad_at and bad:
            _, text, reason = bad.pop()
            out.append(text)
            expect.lines[len(out)] = (f"line-{len(out)}", "invalid", reason)
        poison = rng.random() < 0.01
        out.append(json.dumps(_request(name, i, models[i % len(models)], poison)))
        expect.lines[len(out)] = (f"{name}-{i}", "failed" if poison else "succeeded", None)
    return ("\n".join(out) + "\n").encode(), expect


def make_inputs(plan: Plan, folder: Path) -> list[tuple[Path, Expect]]:
    """The campaign's files, written to ``folder``, in the order they will be dropped: two
    request files and the bad files first (the first drop), then one request file per kill,
    so that every run has a new file to ingest and batches to crash in."""
    rng = random.Random(plan.seed)
    folder.mkdir(parents=True, exist_ok=True)
    made: list[tuple[Path, Expect]] = []
    per_file = max(1, plan.requests // plan.files)
    for k in range(plan.files):
        name = f"chaos-{k:02d}"
        data, expect = _input_file(name, per_file, rng)
        made.append((_write(folder / f"{name}.jsonl", data), expect))
    for k, (kind, data, reason) in enumerate(BAD_FILES):
        name = f"bad-{k}"
        expect = Expect(name, file_error=reason, bad_kind=kind)
        made.insert(2, (_write(folder / f"{name}.jsonl", data), expect))
    return made


def big_invalid_file(folder: Path, n: int) -> tuple[Path, Expect]:
    """Many lines for a model nobody serves: slow enough to ingest and to write out that a
    SIGTERM lands in the middle, and no provider traffic."""
    expect = Expect("bulk")
    lines = []
    for i in range(n):
        request = {"custom_id": f"b{i}", "model": "nobody-7b", "messages": [{"role": "user"}]}
        lines.append(json.dumps(request))
        expect.lines[i + 1] = (f"b{i}", "invalid", "unknown model")
    return _write(folder / "bulk.jsonl", ("\n".join(lines) + "\n").encode()), expect


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def drop(src: Path, inbox: Path) -> None:
    """Into the inbox atomically, as ``batchd submit`` does."""
    tmp = inbox / f".{src.name}.tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, inbox / src.name)


# -- the campaign --------------------------------------------------------------------------------


@dataclass
class Campaign:
    plan: Plan
    work: Path
    emulator: EmulatorProcess
    daemon: DaemonProcess
    pending: list[tuple[Path, Expect]]
    expects: list[Expect] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)
    _dups: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROVIDERS, 0))

    @property
    def inbox(self) -> Path:
        return self.work / "root" / "inbox"

    def drop_next(self, n: int = 1) -> None:
        for _ in range(min(n, len(self.pending))):
            path, expect = self.pending.pop(0)
            drop(path, self.inbox)
            self.expects.append(expect)

    def record(self, how: str, started: float, code: int | None, reached: bool = True) -> None:
        now = self.emulator.duplicates()
        new: dict[str, int] = {p: now[p] - self._dups[p] for p in PROVIDERS}
        self._dups = now
        seconds = round(time.monotonic() - started, 2)
        run = RunRecord(len(self.runs) + 1, how, seconds, code, reached, new)
        self.runs.append(run)
        mark = "" if reached else " (not reached: killed at the timeout instead)"
        extra = f" new duplicates {new}" if any(new.values()) else ""
        print(f"  run {run.index:2d}: {how}{mark}, exit {code}, {seconds}s{extra}", flush=True)


def kill_schedule(plan: Plan, rng: random.Random) -> list[str | None]:
    """Each crash point at least once (more when there are many kills), the rest random."""
    points: list[str | None] = [*POINTS] * max(1, plan.kills // 8)
    points = points[: plan.kills]
    points += [None] * (plan.kills - len(points))
    rng.shuffle(points)
    return points


def kill_once(c: Campaign, point: str | None) -> None:
    """Start the daemon and kill it: at a crash point, or with SIGKILL at a random moment."""
    c.drop_next()
    started = time.monotonic()
    if point is None:
        c.daemon.start()
        c.daemon.wait_log("batchd started", c.plan.kill_timeout_s)
        time.sleep(c.rng.uniform(0.0, 2.5))  # the random moment itself
        c.record("SIGKILL at a random moment", started, c.daemon.kill())
        return
    nth = 1 if point in (AFTER_INGEST_COMMIT, MID_OUTBOX_WRITE) else c.rng.randint(1, 3)
    c.daemon.start(env=crash_at(point, nth))
    code = c.daemon.wait(c.plan.kill_timeout_s)
    reached = code is not None and crash_reached(point) in c.daemon.log()
    if code is None:
        code = c.daemon.kill()
    c.record(f"crash point {point}:{nth}", started, code, reached)


# -- SIGTERM in each phase -----------------------------------------------------------------------


def _slow(route: str) -> list[dict[str, Any]]:
    return [{"kind": "slow", "provider": "openai", "route": route, "delay_s": 2.0, "times": 1}]


def _small_openai_file(c: Campaign, tag: str) -> None:
    """A file of a few OpenAI requests, for the phases that need a batch in flight."""
    name = f"term-{tag}"
    expect = Expect(name)
    lines = []
    for i in range(3):
        lines.append(json.dumps(_request(name, i, "gpt-4o-mini", False)))
        expect.lines[i + 1] = (f"{name}-{i}", "succeeded", None)
    path = _write(c.work / "inputs" / f"{name}.jsonl", ("\n".join(lines) + "\n").encode())
    drop(path, c.inbox)
    c.expects.append(expect)


def _arm(c: Campaign, phase: str) -> Callable[[], bool]:
    """Set up ``phase`` and return the check that says the daemon is in it now."""
    d, emu, outbox = c.daemon, c.emulator, c.work / "root" / "outbox"
    if phase == "ingest":
        path, expect = big_invalid_file(c.work / "inputs", c.plan.ingest_lines)
        drop(path, c.inbox)
        c.expects.append(expect)
        return lambda: not (c.inbox / "bulk.jsonl").exists()
    if phase == "outbox":  # the bulk file's outbox, after its ingest was cut short above
        return lambda: any(p.name.startswith(".bulk.results") for p in outbox.iterdir())
    if phase in ("create", "results"):
        route = "batches.create" if phase == "create" else "batches.results"
        before = emu.counter("openai", "faults_slow")
        emu.add_faults(_slow(route))
        _small_openai_file(c, phase)
        return lambda: emu.counter("openai", "faults_slow") > before  # answer held back now
    if phase == "poll":
        _small_openai_file(c, phase)
        return lambda: "batch submitted" in d.log()
    return lambda: "batchd started" in d.log()  # startup, idle


def sigterm_once(c: Campaign, phase: str) -> None:
    """Start the daemon, SIGTERM it in ``phase``: it must exit 0 within the grace period."""
    started = time.monotonic()
    c.daemon.start()
    c.daemon.wait_log("batchd started", c.plan.kill_timeout_s)
    if phase == "idle":  # let it finish what it has first
        wait_until(lambda: "results written" in c.daemon.log(), 3.0)
    in_phase = _arm(c, phase)
    reached = wait_until(in_phase, c.plan.kill_timeout_s, step=0.005)
    c.daemon.signal(signal.SIGTERM)
    sent = time.monotonic()
    code = c.daemon.wait(GRACE_S + 10)
    exit_s = time.monotonic() - sent
    if code is None:
        code = c.daemon.kill()
    clean = code == 0 and exit_s <= GRACE_S + 2.0
    how = f"SIGTERM ({phase}): {'clean' if clean else 'NOT CLEAN'} exit in {exit_s:.2f}s"
    c.record(how, started, code, reached)
    c.runs[-1].exit_code = code if clean else -1


# -- the end: run to completion, then check ------------------------------------------------------


def final_run(c: Campaign) -> None:
    c.drop_next(len(c.pending))
    started = time.monotonic()
    c.daemon.start(once=True)
    code = c.daemon.wait(c.plan.final_timeout_s)
    if code is None:
        code = c.daemon.kill()
        print(c.daemon.log()[-5000:], file=sys.stderr)
    c.record("--once, to the end", started, code)


@dataclass
class Findings:
    requests: int = 0
    lines: int = 0
    lost: int = 0
    duplicated_lines: int = 0
    wrong_status: int = 0
    bad_kinds_passed: int = 0
    bad_kinds_total: int = 0
    stray_files: list[str] = field(default_factory=list)  # temp, work or spool files left over
    problems: list[str] = field(default_factory=list)


def _outputs(outbox: Path) -> dict[str, list[Path]]:
    """Results files by the input file they answer (read from the summaries)."""
    found: dict[str, list[Path]] = {}
    for summary in outbox.glob("*.summary.json"):
        name = json.loads(summary.read_text())["file"]
        results = summary.with_name(summary.name.replace(".summary.json", ".results.jsonl"))
        found.setdefault(name.removesuffix(".jsonl"), []).append(results)
    return found


def _check_file(expect: Expect, paths: list[Path], f: Findings) -> set[str]:
    """Compare one input's results with what it must be; returns the bad kinds that passed."""
    f.lines += len(expect.lines)
    f.requests += sum(1 for _, status, _ in expect.lines.values() if status != "invalid")
    if not paths:
        f.lost += len(expect.lines)
        f.problems.append(f"{expect.name}: no results file")
        return set()
    if len(paths) > 1:
        f.problems.append(f"{expect.name}: {len(paths)} results files")
    seen: Counter[int] = Counter()
    passed: set[str] = set()
    bad_ok: dict[str, bool] = {}
    for path in paths:
        for raw in path.read_text().splitlines():
            r = json.loads(raw)
            seen[r["line"]] += 1
            want = expect.lines.get(r["line"])
            ok = want is not None and (r["custom_id"], r["status"]) == want[:2]
            if ok and want is not None and want[2] is not None:
                ok = (
                    want[2] in r["error"]["message"]
                    and f"line {r['line']}" in r["error"]["message"]
                )
            if not ok:
                f.wrong_status += 1
                f.problems.append(f"{expect.name} line {r['line']}: got {r['status']}, want {want}")
            kind = _bad_kind(want)
            if kind:
                bad_ok[kind] = bad_ok.get(kind, True) and ok
    f.lost += sum(1 for line in expect.lines if seen[line] == 0)
    f.duplicated_lines += sum(n - 1 for n in seen.values() if n > 1)
    passed.update(k for k, ok in bad_ok.items() if ok)
    return passed


def _bad_kind(want: tuple[str, str, str | None] | None) -> str | None:
    if want is None or want[1] != "invalid" or want[2] is None:
        return None
    return next((kind for kind, _, reason in BAD_LINES if reason == want[2]), None)


def _check_bad_file(expect: Expect, paths: list[Path], f: Findings) -> bool:
    if len(paths) != 1 or paths[0].read_text():
        f.problems.append(f"{expect.name} ({expect.bad_kind}): {len(paths)} results files")
        return False
    summary = json.loads(paths[0].with_name(f"{expect.name}.summary.json").read_text())
    ok = expect.file_error is not None and expect.file_error in (summary["file_error"] or "")
    if not ok:
        f.problems.append(f"{expect.name} ({expect.bad_kind}): file_error {summary['file_error']}")
    return ok


def check(c: Campaign) -> Findings:
    f = Findings()
    outputs = _outputs(c.work / "root" / "outbox")
    kinds: set[str] = set()
    for expect in c.expects:
        paths = outputs.get(expect.name, [])
        if expect.bad_kind is not None:
            if _check_bad_file(expect, paths, f):
                kinds.add(expect.bad_kind)
            continue
        kinds |= _check_file(expect, paths, f)
    f.bad_kinds_total = len(BAD_LINES) + len(BAD_FILES)
    f.bad_kinds_passed = len(kinds)
    leftovers = [p.name for p in c.inbox.iterdir() if not p.name.startswith(".")]
    if leftovers:
        f.problems.append(f"left in the inbox: {leftovers}")
    root = c.work / "root"
    f.stray_files = sorted(
        str(p.relative_to(root))
        for p in [*root.glob("outbox/.*"), *root.glob("state/work/*"), *root.glob("state/spool/*")]
    )
    if f.stray_files:
        f.problems.append(f"stray files: {f.stray_files[:10]}")
    return f


# -- figures -------------------------------------------------------------------------------------


def figures(c: Campaign, f: Findings, seconds: float) -> dict[str, Any]:
    journal = c.emulator.journal()["providers"]
    kills = [r for r in c.runs if r.how.startswith(("SIGKILL", "crash point"))]
    terms = [r for r in c.runs if r.how.startswith("SIGTERM")]
    anthropic = [
        {"run": r.index, "how": r.how, "duplicates": r.duplicates["anthropic"]}
        for r in c.runs
        if r.duplicates.get("anthropic")
    ]
    return {
        "kills": len(kills),
        "kills_at_crash_points": sum(1 for r in kills if r.how.startswith("crash") and r.reached),
        "crash_points_reached": sorted(
            {
                r.how.split()[2].split(":")[0]
                for r in kills
                if r.how.startswith("crash") and r.reached
            }
        ),
        "sigterm_phases": len(terms),
        "sigterm_clean_exits": sum(1 for r in terms if r.exit_code == 0),
        "requests": f.requests,
        "input_lines": f.lines,
        "lost": f.lost,
        "duplicated_result_lines": f.duplicated_lines,
        "wrong_status": f.wrong_status,
        "duplicate_provider_items": {p: journal[p]["duplicate_items"] for p in PROVIDERS},
        "anthropic_duplicates_when": anthropic,
        "batches_created": {p: journal[p]["batches_created"] for p in PROVIDERS},
        "faults_survived": c.emulator.faults_fired(),
        "bad_input_kinds_passed": f"{f.bad_kinds_passed}/{f.bad_kinds_total}",
        "stray_files": len(f.stray_files),
        "provider_files_left": c.emulator.provider_files(),
        "seconds": round(seconds, 1),
        "seed": c.plan.seed,
        "problems": f.problems[:50],
        "runs": [asdict(r) for r in c.runs],
    }


def verdict(fig: dict[str, Any]) -> list[str]:
    """The promises; each broken one is a line (empty: all kept)."""
    broken = []
    for key in ("lost", "duplicated_result_lines", "wrong_status"):
        if fig[key]:
            broken.append(f"{key} = {fig[key]}")
    for p in ("openai", "gemini"):
        if fig["duplicate_provider_items"][p]:
            broken.append(f"{p} duplicate items = {fig['duplicate_provider_items'][p]}")
    if fig["sigterm_clean_exits"] != fig["sigterm_phases"]:
        broken.append("a SIGTERM exit was not clean")
    passed, total = fig["bad_input_kinds_passed"].split("/")
    if passed != total:
        broken.append(f"bad-input kinds passed {passed}/{total}")
    if fig["runs"][-1]["exit_code"] != 0:
        broken.append("the final --once run did not finish cleanly")
    return broken


def print_figures(fig: dict[str, Any], broken: list[str]) -> None:
    print("\nbatchd reliability campaign")
    print(f"  kills (SIGKILL)           {fig['kills']}  ({fig['kills_at_crash_points']} at crash "
          f"points: {', '.join(fig['crash_points_reached'])})")  # fmt: skip
    print(f"  SIGTERM phases            {fig['sigterm_clean_exits']}/{fig['sigterm_phases']} clean")
    print(f"  requests                  {fig['requests']} ({fig['input_lines']} input lines)")
    print(f"  lost                      {fig['lost']}")
    print(f"  duplicated result lines   {fig['duplicated_result_lines']}")
    print(f"  wrong status              {fig['wrong_status']}")
    dups = fig["duplicate_provider_items"]
    print("  duplicate provider items  " + ", ".join(f"{p} {dups[p]}" for p in PROVIDERS))
    for item in fig["anthropic_duplicates_when"]:
        print(f"    anthropic: {item['duplicates']} in run {item['run']} ({item['how']})")
    print(f"  faults survived           {fig['faults_survived']}")
    print(f"  bad-input kinds passed    {fig['bad_input_kinds_passed']}")
    print(f"  stray temp/work files     {fig['stray_files']}")
    left = fig["provider_files_left"]
    print(f"  provider files left       openai {left['openai']}, gemini {left['gemini']}")
    print(f"  seconds                   {fig['seconds']}")
    for problem in fig["problems"]:
        print(f"  problem: {problem}")
    print("  RESULT: " + ("all promises kept" if not broken else "BROKEN: " + "; ".join(broken)))


# -- main ----------------------------------------------------------------------------------------


def run_campaign(plan: Plan, work: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    (work / "root" / "inbox").mkdir(parents=True, exist_ok=True)
    emulator = EmulatorProcess(work / "emulator", plan.time_scale, work / "emulator.log")
    try:
        emulator.set_faults(harsh(FAULTS) if plan.harsh else FAULTS)
        daemon = DaemonProcess(work / "root", emulator.url, config_extra=DAEMON_CONFIG)
        inputs = make_inputs(plan, work / "inputs")
        c = Campaign(plan, work, emulator, daemon, inputs, rng=random.Random(plan.seed))
        c.drop_next(2 + len(BAD_FILES))
        print(f"campaign: {plan.kills} kills, ~{plan.requests} requests, work dir {work}")
        for point in kill_schedule(plan, c.rng):
            kill_once(c, point)
        for phase in SIGTERM_PHASES:
            sigterm_once(c, phase)
        final_run(c)
        return figures(c, check(c), time.monotonic() - t0)
    finally:
        emulator.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--short", action="store_true", help="5 kills, 600 requests (make test)")
    ap.add_argument("--kills", type=int, help="SIGKILLs (default 24; 5 with --short)")
    ap.add_argument("--requests", type=int, help="requests (default 3000; 600 with --short)")
    ap.add_argument("--files", type=int, help="request files (default: kills + 2)")
    ap.add_argument("--seed", type=int, default=1, help="randomness of the campaign")
    ap.add_argument("--time-scale", type=float, default=0.05, help="emulator time scale")
    ap.add_argument("--harsh", action="store_true", help="4x the faults, and slow creates")
    ap.add_argument("--workdir", type=Path, help="where to run (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)
    plan = Plan.of(args)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="batchd-chaos-"))
    try:
        fig = run_campaign(plan, work)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    broken = verdict(fig)
    if args.json:
        print(json.dumps({**fig, "broken": broken}))
    else:
        print_figures(fig, broken)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
