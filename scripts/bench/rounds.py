"""The alternating-rounds driver of every A/B mode (--compare, --auth, --cluster, --attack).

Owns the order of the slots and the per-side arithmetic. A run is ROUNDS rounds; in each,
every side (a binary, a buyer-auth mode, a Redis mode, an attack) gets one slot, in the order
given in odd rounds and reversed in even ones (round 1 A then B, round 2 B then A, ...), so
drift over the run (the orders table growing, other load on the machine) favours none of
them. With a bracket side (--attack's baseline), a bracket slot comes first and after every
round, so every other slot lies between two bracket slots.

Each slot is the mode's function SLOT(name, round, position, index) -> {figure: value}
(index counts the slots of the whole run from 1); the driver
keeps the results in order (Slot) and gives per side the values in round order, their
median, and the ratio of two sides' medians. Nothing here knows what a slot measures.
"""

import statistics


class Slot:
    """One slot's place in the run and what it measured."""

    def __init__(self, index, round_, position, name, data):
        self.index = index  # 1-based over the whole run
        self.round = round_  # 1-based; 0 for the bracket slot before round 1
        self.position = position  # 1-based within its round
        self.name = name
        self.data = data  # the slot function's figures

    def get(self, key):
        return self.data.get(key)


def schedule(names, rounds, bracket=None):
    """[(round, position, name)] in running order."""
    out = []
    if bracket is not None:
        out.append((0, 1, bracket))
    for r in range(1, rounds + 1):
        order = list(names) if r % 2 else list(reversed(names))
        if bracket is not None:
            order.append(bracket)
        out += [(r, i + 1, n) for i, n in enumerate(order)]
    return out


class Rounds:
    """The slots of one alternating run."""

    def __init__(self, names, rounds, bracket=None):
        self.names = list(names)
        self.rounds = rounds
        self.bracket = bracket
        self.plan = schedule(self.names, rounds, bracket)
        self.slots = []

    def run(self, slot_fn):
        for i, (r, pos, name) in enumerate(self.plan):
            data = slot_fn(name, r, pos, i + 1)
            self.slots.append(Slot(i + 1, r, pos, name, data or {}))
        return self

    def of(self, name):
        """NAME's slots in running order."""
        return [s for s in self.slots if s.name == name]

    def values(self, name, key):
        """NAME's values of KEY, one per slot in running order (None where missing)."""
        return [s.get(key) for s in self.of(name)]

    def median(self, name, key):
        xs = [x for x in self.values(name, key) if x is not None]
        return statistics.median(xs) if xs else None

    def ratio_of_medians(self, a, b, key):
        """median(A) ÷ median(B) of KEY, or None."""
        ma, mb = self.median(a, key), self.median(b, key)
        return None if ma is None or not mb else ma / mb

    def in_round(self, name, r):
        return next((s for s in self.slots if s.name == name and s.round == r), None)
