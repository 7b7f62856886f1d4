"""A hypothesis state machine drives the pool against a model of nginx's free list:
order, counts, instance flips, close, double close and reuse."""

from __future__ import annotations

import logging

from conftest import free_list
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ngxffi import Connection, Cycle
from ngxffi import os as nos

N = 6


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        logging.getLogger("ngxffi").setLevel(logging.CRITICAL + 10)  # expected alerts
        self.cycle = Cycle(N, use="poll")  # poll: no kernel registrations needed
        self.free = list(range(N))  # the model's free list, head first
        self.used: dict[int, Connection] = {}
        self.instance = [1] * N  # read instance as ngx_event_process_init leaves it
        self.generation = [0] * N

    def teardown(self) -> None:
        for c in self.used.values():
            self.cycle.close_connection(c)
        self.cycle.close()
        logging.getLogger("ngxffi").setLevel(logging.NOTSET)

    @rule()
    def get(self) -> None:
        fd = nos.eventfd()
        c = self.cycle.get_connection(fd)
        if not self.free:
            assert c is None
            nos.close(fd)
            return
        slot = self.free.pop(0)
        assert c is not None and c.index == slot and c.fd == fd
        self.instance[slot] ^= 1
        self.generation[slot] += 1
        assert c.read.instance == c.write.instance == self.instance[slot]
        assert c.generation == self.generation[slot]
        assert not c.read.closed and not c.read.active and c.write.write
        self.used[slot] = c

    @precondition(lambda self: self.used)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(sorted(self.used)))
        c = self.used.pop(slot)
        self.cycle.close_connection(c)
        self.free.insert(0, slot)
        assert c.raw.fd == -1 and c.read.closed and c.write.closed
        assert c.read.instance == self.instance[slot]  # close leaves instance alone

    @precondition(lambda self: self.free)
    @rule(data=st.data())
    def close_again(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(self.free))
        self.cycle.close_connection(self.cycle.connections[slot])  # only an alert

    @invariant()
    def counts_and_order_match(self) -> None:
        cy = self.cycle
        assert cy.free_connection_n == len(self.free)
        assert free_list(cy) == self.free


TestPool = PoolMachine.TestCase
TestPool.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
