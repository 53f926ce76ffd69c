"""Item 10 of issue 8: a Hypothesis state machine over writers, kills, resumes, corruption, verify and reads.

The model is what each run's writer has committed and which faults were injected. After every step the commit
marks equal the model; ``verify`` must report exactly the injected faults; a read returns the oracle's values for
every committed, uncorrupted record, NaN for the rest, and raises for a corrupt chunk.

A kill is emulated in-process (the SIGKILL tests of test_reliability.py kill real processes): the writer dies
with records buffered, after a torn write of its next chunk's data without the commit mark, optionally leaving
the temporary file a killed atomic write leaves; its lock is released as the kernel releases a dead process's
flock. A resume opens a new collector for the run, from the last checkpoint or from scratch (which re-writes
committed chunks, and so repairs a corrupted one), after the sweeper when no writer is active.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

import ensemble_stats as es
from collectors import EnsembleStore, EvalGrid, OutputCollector
from ensemble_stats import sweep_partial_files
from ensemble_stats.errors import RunLockedError, StoreCorruptionError

from .conftest import oracle

pytestmark = pytest.mark.reliability

GAMMAS, WIDTH, SEEDS = [0.5, 1.0], 4, [0, 1]
RUNS = [(g, WIDTH, s) for g in GAMMAS for s in SEEDS]
P, O, TC, T = 6, 2, 4, 12  # noqa: E741 - points, outputs, time chunk, times
N_CHUNKS = T // TC


class StoreMachine(RuleBasedStateMachine):
    examples: ClassVar[int] = 0
    injected: ClassVar[dict[str, int]] = {
        "kill": 0,
        "partial": 0,
        "flip": 0,
        "truncate": 0,
        "delete": 0,
        "verify": 0,
        "read": 0,
        "refused": 0,
    }

    def __init__(self):
        super().__init__()
        type(self).examples += 1
        self.dir = Path(tempfile.mkdtemp(prefix="es-state-"))
        self.path = self.dir / "s.zarr"
        rng = np.random.default_rng(11)
        grid = EvalGrid(rng.normal(size=(P, 3)), rng.normal(size=(P, O)))
        self.store = EnsembleStore.create(
            self.path,
            grid,
            gammas=GAMMAS,
            widths=[WIDTH],
            seeds=SEEDS,
            times=list(range(T)),
            time_units="step",
            time_chunk=TC,
        )
        self.committed = dict.fromkeys(range(len(RUNS)), 0)  # chunks committed: always a prefix of the run
        self.writers: dict[int, OutputCollector] = {}
        self.position: dict[int, int] = {}  # the next chunk each active writer writes
        self.checkpoint: dict[int, dict] = {}
        self.faults: dict[str, str] = {}  # path -> kind, what verify must report
        self.corrupt: set[tuple[int, int]] = set()  # (run, chunk) unreadable

    # ------------------------------------------------------------------ helpers
    def _chunk_file(self, r: int, c: int) -> Path:
        gi, si = GAMMAS.index(RUNS[r][0]), SEEDS.index(RUNS[r][2])
        return self.path / "prediction" / "c" / str(gi) / "0" / str(si) / str(c) / "0" / "0"

    def _index(self, r: int):
        return self.store.run_index(*RUNS[r])

    def _open(self, r: int, from_checkpoint: bool) -> None:
        g, w, s = RUNS[r]
        col = OutputCollector(self.store, gamma=g, width=w, seed=s, resume=True)
        if from_checkpoint and r in self.checkpoint:
            col.load_state_dict(self.checkpoint[r])
        self.writers[r] = col
        self.position[r] = col.state_dict()["next_index"] // TC

    # ------------------------------------------------------------------ rules
    @precondition(lambda self: len(self.writers) < len(RUNS))
    @rule(data=st.data(), from_checkpoint=st.booleans())
    def resume(self, data, from_checkpoint):
        idle = [r for r in range(len(RUNS)) if r not in self.writers]
        r = data.draw(st.sampled_from(idle), label="run")
        if not self.writers:  # the sweeper runs only while no writer of the store is active
            sweep_partial_files(self.path)
            self.faults = {p: k for p, k in self.faults.items() if k != "partial"}
        self._open(r, from_checkpoint)

    @precondition(lambda self: any(self.position[r] < N_CHUNKS for r in self.writers))
    @rule(data=st.data())
    def write_chunk(self, data):
        r = data.draw(st.sampled_from(sorted(r for r in self.writers if self.position[r] < N_CHUNKS)), label="run")
        g, w, s = RUNS[r]
        c = self.position[r]
        for t in range(c * TC, (c + 1) * TC):  # the collector commits when the time chunk is complete
            self.writers[r].record_output(t, oracle(g, w, s, t, P, O))
        self.checkpoint[r] = self.writers[r].state_dict()
        self.position[r] = c + 1
        self.committed[r] = max(self.committed[r], c + 1)
        if (r, c) in self.corrupt:  # re-written whole: a resumed-from-scratch writer repairs the chunk
            self.corrupt.discard((r, c))
            self.faults.pop(str(self._chunk_file(r, c)), None)
        if c + 1 == N_CHUNKS:
            self.writers.pop(r).close()

    @precondition(lambda self: any(self.position[r] < N_CHUNKS for r in self.writers))
    @rule(data=st.data(), buffered=st.integers(0, TC - 1), leave_partial=st.booleans())
    def kill(self, data, buffered, leave_partial):
        r = data.draw(st.sampled_from(sorted(r for r in self.writers if self.position[r] < N_CHUNKS)), label="run")
        g, w, s = RUNS[r]
        c = self.position[r]
        col = self.writers.pop(r)
        for t in range(c * TC, c * TC + buffered):  # taken, buffered, never flushed
            col.record_output(t, oracle(g, w, s, t, P, O))
        if c >= self.committed[r]:
            # torn: the chunk's data went out, the commit mark did not
            garbage = np.full((1, 1, 1, TC, P, O), 12345.0 + r, dtype=np.float32)
            sel = (*(slice(i, i + 1) for i in self._index(r)), slice(c * TC, (c + 1) * TC))
            self.store.array("prediction")[sel] = garbage
        if leave_partial:
            partial = Path(f"{self._chunk_file(r, c)}.partial")
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(b"half a chunk")
            self.faults[str(partial)] = "partial"
            type(self).injected["partial"] += 1
        col.run_lock.release()  # what the kernel does for a dead process
        col._records.clear()  # the dead process's memory
        type(self).injected["kill"] += 1

    @precondition(lambda self: bool(self.writers))
    @rule(data=st.data())
    def second_writer_is_refused(self, data):
        r = data.draw(st.sampled_from(sorted(self.writers)), label="run")
        g, w, s = RUNS[r]
        with pytest.raises(RunLockedError):
            OutputCollector(self.store, gamma=g, width=w, seed=s, resume=True)
        type(self).injected["refused"] += 1

    @precondition(lambda self: any(self.committed[r] for r in range(len(RUNS))))
    @rule(data=st.data(), how=st.sampled_from(["flip", "truncate", "delete"]))
    def corrupt_chunk(self, data, how):
        cands = [(r, c) for r in range(len(RUNS)) for c in range(self.committed[r]) if (r, c) not in self.corrupt]
        if not cands:
            return
        r, c = data.draw(st.sampled_from(cands), label="chunk")
        f = self._chunk_file(r, c)
        raw = bytearray(f.read_bytes())
        if how == "flip":
            i = data.draw(st.integers(0, len(raw) - 1), label="byte")
            raw[i] ^= 1 << data.draw(st.integers(0, 7), label="bit")
            f.write_bytes(bytes(raw))
        elif how == "truncate":
            f.write_bytes(bytes(raw[: data.draw(st.integers(0, len(raw) - 1), label="keep")]))
        else:
            f.unlink()
        self.faults[str(f)] = "missing" if how == "delete" else "corrupt"
        self.corrupt.add((r, c))
        type(self).injected[how] += 1

    @invariant()
    def verify_reports_exactly_the_injected_faults(self):
        found = {p.path: p.kind for p in es.verify_store(self.path)}
        assert found == self.faults
        type(self).injected["verify"] += 1

    @rule()
    def read(self):
        # open_ensemble reads the seeds of a (gamma, width) together (dask chunks of many seeds), so a corrupt
        # chunk makes its whole block raise: the unit read here is that block, one time chunk long
        ds = es.open_ensemble(self.path)
        for g in GAMMAS:
            for c in range(N_CHUNKS):
                block = ds.sel(gamma=g, width=WIDTH).isel(time=slice(c * TC, (c + 1) * TC))
                runs = [r for r, run in enumerate(RUNS) if run[0] == g]
                if any((r, c) in self.corrupt for r in runs):
                    with pytest.raises((ValueError, StoreCorruptionError)) as e:
                        block.prediction.values  # noqa: B018
                    text = str(e.value).lower()
                    assert isinstance(e.value, StoreCorruptionError) or "checksum" in text or "decod" in text, e.value
                    continue
                got, steps = block.prediction.values, block.step.values
                for r in runs:
                    s = SEEDS.index(RUNS[r][2])
                    if c < self.committed[r]:
                        want = np.stack([oracle(*RUNS[r], t, P, O) for t in range(c * TC, (c + 1) * TC)])
                        assert np.array_equal(got[s], want), (r, c)
                        assert steps[s].tolist() == list(range(c * TC, (c + 1) * TC)), (r, c)
                    else:
                        assert np.isnan(got[s]).all(), (r, c)
        type(self).injected["read"] += 1

    @invariant()
    def commit_marks_equal_the_model(self):
        written = np.asarray(self.store.array("written")[...])
        for r in range(len(RUNS)):
            want = np.arange(T) < self.committed[r] * TC
            assert written[self._index(r)].tolist() == want.tolist(), (r, self.committed[r])

    def teardown(self):
        for col in self.writers.values():
            col.run_lock.release()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.mark.parametrize(
    "examples,steps",
    [pytest.param(8, 25, id="8-examples"), pytest.param(150, 40, id="150-examples", marks=pytest.mark.slow)],
)
def test_store_equals_the_model_under_writes_kills_resumes_and_corruption(reliability, examples, steps):
    StoreMachine.examples = 0
    StoreMachine.injected = dict.fromkeys(StoreMachine.injected, 0)
    config = settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        derandomize=os.environ.get("CI") is not None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    held = 0
    try:
        run_state_machine_as_test(StoreMachine, settings=config)
        held = StoreMachine.examples
    finally:
        inj = StoreMachine.injected
        reliability(
            10,
            "Hypothesis state machine: write chunk, kill (torn write, stray partial file), resume from checkpoint or "
            "from scratch, flip/truncate/delete a chunk, second writer, verify, read",
            StoreMachine.examples,
            held,
            f"after every step the commit marks equal the model; verify reports exactly the injected faults; reads "
            f"equal the oracle, NaN where uncommitted, raise where corrupt ({inj['kill']} kills, {inj['partial']} "
            f"partial files, {inj['flip']} flipped bits, {inj['truncate']} truncations, {inj['delete']} deletions, "
            f"{inj['refused']} second writers refused, {inj['verify']} verifies, {inj['read']} full reads)",
        )
