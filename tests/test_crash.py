"""Kill and restart: a message is shown once, and its sender's report is true, whoever
dies and whenever.

Store before acknowledging, and send from a durable outbox (docs/architecture.md,
"History: the order of writes"): a receiver stores a message before its ACK leaves, so
"delivered" means stored; a sender stores each message (an 'out' row, and an outbox entry
for a direct one) before its first DATA, and a restarted sender sends its outbox again.
So whatever moment SIGKILL strikes, every 'out' row of the sender ends up exactly once as
an 'in' row of the receiver and is reported delivered (by one of the sender's runs), and
nothing is reported failed.

Real `udpchat --jsonl` processes on 127.0.0.1 (tests/crash.py), through the lossy relay.
The kill moment is drawn from a seeded generator: UDPCHAT_CRASH_SEEDS=N runs seeds 1..N
(default 2) for a longer soak, `-s` shows a summary line per run.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from crash import Person, Record, free_udp_ports, reported, texts_by_id
from relay import Faults, LossyRelay

from udpchat.runtimes import MODELS

SEEDS = range(1, int(os.environ.get("UDPCHAT_CRASH_SEEDS", "2")) + 1)
MESSAGES = 500
FAULTS = Faults(loss=0.1, duplicate=0.02, reorder=0.05)
OUTCOMES_TIMEOUT = 90.0
STALL = 20.0
"""Seconds without a new outcome after which waiting is pointless. A healthy transfer
reports one every few seconds at worst (retransmissions back off to 2 s at most, a peer
silent for 13 s while we retransmit is taken for gone, and its messages held)."""
OUTCOME_EVENTS = ("message_delivered", "delivery_failed")
EXIT_TIMEOUT = 40.0
"""A chat's end of input waits (up to 35 s) for what it has pending."""


@pytest.fixture
def people() -> Iterator[list[Person]]:
    """The people of a test; every process of theirs is killed at the end, pass or fail."""
    started: list[Person] = []
    yield started
    for person in started:
        person.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("model", MODELS)
def test_receiver_killed_and_restarted_shows_every_message_once(
    people: list[Person], tmp_path: Path, model: str, seed: int
) -> None:
    _kill_and_restart(people, tmp_path, model, seed, victim="bob")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("model", MODELS)
def test_sender_killed_and_restarted_shows_every_message_once(
    people: list[Person], tmp_path: Path, model: str, seed: int
) -> None:
    _kill_and_restart(people, tmp_path, model, seed, victim="alice")


def _kill_and_restart(
    people: list[Person], tmp_path: Path, model: str, seed: int, victim: str
) -> None:
    """alice sends MESSAGES direct messages to bob through the lossy relay; `victim` is
    killed at a random moment and started again at once, on the same port with the same
    history; then every message alice accepted must be shown by bob once and reported
    delivered by alice.

    The moment is a point of the transfer, not of the clock: 500 messages take from a
    tenth of a second to a few, by model and machine, and a kill after the last one
    would prove nothing. The victim dies as soon as the harness sees its `kill_after`-th
    line of progress (bob's message_received, alice's message_sent), drawn from the
    seed; the chat goes on while the harness reacts, so the exact instant varies."""
    kill_after = random.Random(seed).randint(1, MESSAGES - 1)
    texts = [f"m{i:04d} seed {seed}" for i in range(1, MESSAGES + 1)]
    with LossyRelay(FAULTS, seed=seed) as relay:
        alice_port, bob_port = free_udp_ports(2)
        relay.connect(("127.0.0.1", alice_port), ("127.0.0.1", bob_port))
        alice = Person(
            "alice", tmp_path / "alice", model=model, port=alice_port, peer=relay.address_for_a
        )
        bob = Person("bob", tmp_path / "bob", model=model, port=bob_port, peer=relay.address_for_b)
        people += [alice, bob]
        alice.start()
        bob.start()
        alice.current.expect("peer_joined", nick="bob")

        dying = alice if victim == "alice" else bob
        progress = "message_sent" if victim == "alice" else "message_received"
        started = time.monotonic()
        feeder = alice.current.feed([f"/msg bob {text}" for text in texts])
        run = dying.current
        run.wait_for(_more_than(lambda: run.count(progress), kill_after - 1), 30.0)
        dying.kill()
        killed_at = time.monotonic() - started
        seen_at_kill = run.count(progress)
        dying.start()
        # Read once the new run is up: it has recovered the history if the kill left a
        # write half done (which a read-only reader cannot do).
        accepted_at_kill = len(alice.texts("out"))
        if victim == "alice":
            feeder.join(timeout=10)  # it stopped at the broken pipe
            accepted = set(alice.texts("out"))  # alice's responsibility now
            alice.current.expect("peer_joined", nick="bob")
            feeder = alice.current.feed([f"/msg bob {t}" for t in texts if t not in accepted])
        feeder.join(timeout=60)
        assert not feeder.is_alive(), f"alice stopped reading her input; {alice.describe()}"

        _wait_for_outcomes(alice, texts)
        for person in (alice, bob):
            person.current.close_input()
        statuses = {person.name: person.current.wait(EXIT_TIMEOUT) for person in (alice, bob)}
        counts = relay.counts

    problems = _problems(alice, bob, texts)
    print(
        f"\ncrash: model={model} seed={seed} killed {victim} {killed_at:.3f} s in, after"
        f" {seen_at_kill} {progress} lines (aimed at {kill_after});"
        f" messages={MESSAGES} accepted by alice at the kill={accepted_at_kill}"
        f" re-sent from her outbox={len(reported(alice, 'message_queued'))};"
        f" bob printed={len(bob.records('message_received'))} stored={len(bob.texts('in'))};"
        f" relay received={counts.received} forwarded={counts.forwarded}"
        f" dropped={counts.dropped} duplicated={counts.duplicated} delayed={counts.delayed};"
        f" exit statuses={statuses}; mismatches="
        + (", ".join(f"{kind}: {len(found)}" for kind, found in problems.items()) or "0")
    )
    assert not problems, "\n".join(
        [f"{kind}: {len(found)}, e.g. {found[:5]!r}" for kind, found in problems.items()]
        + [alice.describe(), bob.describe()]
    )
    assert None not in statuses.values(), f"still running after end of input: {statuses}"


def _wait_for_outcomes(alice: Person, texts: list[str]) -> None:
    """Wait until alice has reported an outcome (delivered or failed) for each of
    `texts`, over all her runs, at most OUTCOMES_TIMEOUT seconds, and no longer than STALL
    seconds without a new one. Returns either way: the checks that follow say what is
    missing."""
    wanted = set(texts)

    def outcome_lines() -> int:
        return sum(run.count(e) for run in alice.runs for e in OUTCOME_EVENTS)

    def complete() -> bool:
        done = set(reported(alice, "message_delivered")) | set(reported(alice, "delivery_failed"))
        return wanted <= done

    deadline = time.monotonic() + OUTCOMES_TIMEOUT
    progress, last_progress = -1, time.monotonic()
    while (now := time.monotonic()) < deadline and now - last_progress < STALL:
        lines = outcome_lines()
        if lines >= len(wanted) and complete():  # matching texts only when it may be so
            return
        if lines > progress:
            progress, last_progress = lines, now
        alice.current.wait_for(_more_than(outcome_lines, lines), 1.0)


def _more_than(count: Callable[[], int], seen: int) -> Callable[[object], bool | None]:
    """A `wait_for` test: True once `count()` has grown past `seen` (it wakes at each line
    printed; its timeout re-checks the deadlines)."""
    return lambda _: True if count() > seen else None


def _problems(alice: Person, bob: Person, texts: list[str]) -> dict[str, list[str]]:
    """Every way the runs broke "shown exactly once, reported truly": the texts
    concerned, by kind of mismatch (kinds with none left out)."""
    sent = Counter(alice.texts("out"))
    stored = Counter(bob.texts("in"))
    printed = Counter(record["text"] for _, record in bob.records("message_received"))
    delivered = set(reported(alice, "message_delivered"))
    failed = set(reported(alice, "delivery_failed"))
    problems = {
        "never accepted by alice": [t for t in texts if t not in sent],
        "in alice's history more than once": [t for t, n in sent.items() if n > 1],
        "accepted, not in bob's history": [t for t in sent if stored[t] == 0],
        "in bob's history more than once": [t for t, n in stored.items() if n > 1],
        "shown more than once by bob": [t for t, n in printed.items() if n > 1],
        "accepted, never reported delivered": [t for t in sent if t not in delivered],
        "reported delivered, not in bob's history": [t for t in delivered if t not in stored],
        "reported failed (expected none)": sorted(failed),
        "reported failed, and bob has it": [t for t in failed if t in stored],
        "in bob's history, never sent by alice": [t for t in stored if t not in sent],
    }
    return {kind: found for kind, found in problems.items() if found}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("model", MODELS)
def test_outbox_survives_the_senders_restart_until_the_peer_is_back(
    people: list[Person], tmp_path: Path, model: str
) -> None:
    """bob quits; alice writes him three direct messages, quits and starts again; bob
    comes back: he sees the three once, in order, and alice sees them delivered."""
    texts = ["one", "two", "three"]
    alice_port, bob_port = free_udp_ports(2)
    alice = Person("alice", tmp_path / "alice", model=model, port=alice_port,
                   peer=("127.0.0.1", bob_port))  # fmt: skip
    bob = Person("bob", tmp_path / "bob", model=model, port=bob_port,
                 peer=("127.0.0.1", alice_port))  # fmt: skip
    people += [alice, bob]
    first = alice.start()
    bob.start()
    first.expect("peer_joined", nick="bob")
    bob.current.close_input()
    assert bob.current.wait(EXIT_TIMEOUT) == 0, bob.describe()
    first.expect("peer_left", nick="bob")

    for text in texts:
        first.say(f"/msg bob {text}")
        sent = first.expect("message_sent", text=text)
        first.expect("message_queued", message_id=sent["message_id"], text=text, to="bob")
    first.close_input()
    status = first.wait(10.0)
    assert status in (0, 1), (
        f"alice's first run, ended with three messages held for bob, exited with {status}"
        f" (None: still running 10 s after its end of input, waiting for a delivery"
        f" that cannot come); {alice.describe()}"
    )

    second = alice.start()

    def restored(records: list[Record]) -> list[Record] | None:
        queued = [r for r in records if r.get("event") == "message_queued"]
        return queued if len(queued) >= len(texts) else None

    queued = second.wait_for(restored, 15.0)
    assert queued is not None, f"alice restored fewer than 3 messages; {alice.describe()}"
    assert [r["text"] for r in queued] == texts and {r["to"] for r in queued} == {"bob"}, queued

    bob.start()
    ids = set(texts_by_id(second))
    for message_id in ids:
        second.expect("message_delivered", 20.0, message_id=message_id)
    for text in texts:
        bob.current.expect("message_received", text=text)
    for person in (alice, bob):
        person.current.close_input()
    statuses = [person.current.wait(EXIT_TIMEOUT) for person in (alice, bob)]

    printed = [record["text"] for _, record in bob.records("message_received")]
    assert printed == texts, f"bob printed {printed!r}; {bob.describe()}"
    assert bob.texts("in") == texts, f"bob's history holds {bob.history()!r}"
    assert not alice.records("delivery_failed"), alice.describe()
    assert statuses == [0, 0], f"exit statuses {statuses}; {alice.describe()}; {bob.describe()}"
