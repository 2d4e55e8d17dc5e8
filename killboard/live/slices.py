"""How much of a delivery one step of the event loop may do (the hub's slices), and a kill
waiting for the hub's delivery task."""

from __future__ import annotations

from dataclasses import dataclass

from ..kill.langs import Langs
from ..kill.topics import KillFacts
from .subscriber import Subscriber
from .wire import KillVariants

# What the kills waiting for the delivery task hold, at most (bodies, and 8 bytes a socket);
# past it the oldest are delivered in the publishing step (the producer slows down).
LATE_MAX_BYTES = 16 * 1024 * 1024
# Bytes of frames the delivery task gives out in one step (fleet fights: 254 sockets of a
# 3,000-attacker kill are 300-700 MB).
DELIVER_SLICE = 4 * 1024 * 1024
# Kills this large (fleet fights: a 3,000-attacker kill is 2.8 MB) go late to plain sockets
# wanting every language too, so their delivery is sliced; smaller ones are written to those
# at once, as before (a thread hop would only add latency).
WHOLE_LATE_BYTES = 256 * 1024
# More kills than this waiting for deflate at once is a burst (a backlog caught up), not a live
# feed (~0.2 kills/s on average, a few a second at peaks).
BURST = 8
# Sockets given a kill frame in one step of the loop (publish, or a step of the delivery task):
# ~1-2 us of Python each, so a step stays a few ms however many sockets subscribe (10,000 at
# once held the loop ~15 ms per kill, and a stored batch hands over many kills in one step).
SEND_SLICE = 2000
# Sockets written in one step of the flush (a send() each, ~5-10 us of the kernel's work: 10,000
# at once held the loop ~60-100 ms), and bytes written in one step at most (a burst's 4 MB of
# loopback sends took ~13 ms of the loop thread's CPU, 1 MB ~3.5 ms).
FLUSH_SLICE = 500
FLUSH_BYTES = 1024 * 1024
# Plain frames with every language: what a socket takes that asked for no lang and no deflate.
PLAIN: tuple[Langs, int] = (None, 0)
# What a queued kill whose sockets are not looked up yet counts toward LATE_MAX_BYTES: a body
# and its variants, about.
UNMATCHED_BYTES = 32 * 1024
# Sockets' worth of lookups (match and group: set operations in C, ~50 ns a socket) the delivery
# task does for queued kills in one step.
MATCH_SLICE = 32 * SEND_SLICE


@dataclass(eq=False, slots=True)
class Queued:
    """A kill waiting for the delivery task (`DeliveryTask.run`, killboard/live/delivery.py): its
    variants (made in a thread when large), its sockets by variant, and how far its delivery in
    slices has got."""

    kill: KillVariants
    # None: its sockets not looked up yet (queued behind others: the task does it, in steps).
    groups: list[tuple[tuple[Langs, int], list[Subscriber]]] | None
    facts: KillFacts
    nbytes: int  # what it holds: its body, and a pointer per socket (a guess until looked up)
    plain: bool  # some of its sockets take the plain frame with every language (or not known)
    stamp: int  # Hub.changes when its sockets were looked up (-1: look again, check Delivered)
    group: int = 0  # the group being delivered, and the next socket in it
    pos: int = 0


def make_all(todo: list[tuple[KillVariants, tuple[Langs, int]]]) -> None:
    """Make these kills' variants (in the delivery task's thread, or on the loop)."""
    for kill, (langs, bits) in todo:
        if bits:
            kill.deflated(langs, bits)
        else:
            kill.frame(langs)
