"""RS2's per-epoch subsets: a fresh random subset of ``m`` of ``N`` samples every epoch, drawn
without replacement across epochs (Okanovic et al., "Repeated Random Sampling for Minimizing the
Time-to-Accuracy of Learning", ICLR 2024, the "without replacement" variant of their Algorithm 1).

The epochs read one stream of rounds laid end to end, each round a seeded permutation of all N
samples; epoch ``e`` takes the stream's items ``[e m, (e + 1) m)``. So no sample repeats before all
N have been used (each round is a permutation), and with ``m`` dividing ``N`` a round is exactly
``N / m`` epochs. When it does not, an epoch straddles two rounds: it takes the ``r`` samples left
in the old round plus the first ``m - r`` of a fresh permutation of the OTHER ``N - r`` samples
(the leftovers are carried, not dropped), and the new round continues with the rest of that
permutation in its order (the ``r`` carried samples included), so no sample repeats inside an epoch
either. (The paper states the algorithm for whole rounds; carrying the leftovers is this module's
reading for ``m`` not dividing ``N``.)

A round's start depends on the previous round's last ``r`` samples, so a round is built from the one
before it: epoch ``e`` costs ``e m / N + 1`` permutations of N from scratch (under a second for
N = 1e6 and a few hundred epochs); :class:`RS2Draws` keeps the latest rounds, so epoch after epoch
costs one permutation per round. No closed form avoids the chain in general: with ``m > N / 2`` a
round can consist of its straddled head and tail alone, and then its tail must hold the previous
round's leftovers."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

__all__ = ["RS2Draws", "rs2_epoch_positions"]

_STREAM = 0x525332      # "RS2": keeps these draws apart from the loaders' shuffles of the same seed


class RS2Draws:
    """The per-epoch draws of ``m`` of ``num_samples`` positions for one ``seed`` (see the module).

    ``epoch(e)`` -> int64 ``[m]`` positions in ``[0, num_samples)``, distinct; deterministic in
    ``(num_samples, m, seed, e)``. The latest rounds are cached, so consecutive epochs are cheap."""

    def __init__(self, num_samples: int, m: int, seed: int):
        n, m = int(num_samples), int(m)
        if n < 1 or not 1 <= m <= n:
            raise ConfigError(f"RS2 draws {m} samples per epoch from {n}: it needs 1 <= samples per epoch <= "
                              "dataset size; use a pruning rate in [0, 1) on a non-empty dataset")
        self.n, self.m, self.seed = n, m, int(seed)
        self._rounds: dict[int, np.ndarray] = {}

    def _sigma(self, k: int) -> np.ndarray:
        """The fresh permutation of round ``k`` (int64 ``[N]``)."""
        rng = np.random.default_rng([self.seed % 2**64, k, _STREAM])
        return rng.permutation(self.n).astype(np.int64)

    def _carried(self, k: int) -> int:
        """How many samples of round ``k`` the epoch straddling its end takes (0: it ends on an epoch)."""
        return ((k + 1) * self.n) % self.m

    def _next(self, k: int, prev: np.ndarray) -> np.ndarray:
        """Round ``k + 1`` after round ``k`` (``prev``): its first ``m - r`` avoid round k's last ``r``."""
        sigma = self._sigma(k + 1)
        r = self._carried(k)
        if r == 0:
            return sigma
        left = np.zeros(self.n, dtype=bool)
        left[prev[self.n - r:]] = True
        free = np.flatnonzero(~left[sigma])[: self.m - r]       # where in sigma the head lies
        head = np.zeros(self.n, dtype=bool)
        head[free] = True
        return np.concatenate([sigma[free], sigma[~head]])

    def round(self, k: int) -> np.ndarray:
        """Round ``k``: int64 ``[N]``, a permutation of the positions (built from the nearest cached round)."""
        if k < 0:
            raise ValueError(f"round {k}: rounds count from 0")
        if k not in self._rounds:
            start = max((j for j in self._rounds if j < k), default=None)
            if start is None:
                start, cur = 0, self._sigma(0)
            else:
                cur = self._rounds[start]
            prev = self._rounds.get(k - 1)
            for j in range(start, k):
                prev, cur = cur, self._next(j, cur)
            self._rounds = {k: cur} if prev is None else {k - 1: prev, k: cur}     # what the next epochs read
        return self._rounds[k]

    def epoch(self, epoch: int) -> np.ndarray:
        """int64 ``[m]``: the positions epoch ``epoch`` trains on (distinct; a fresh subset every epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch {epoch}: epochs count from 0")
        k, o = divmod(int(epoch) * self.m, self.n)
        first = self.round(k)
        if o + self.m <= self.n:
            return first[o:o + self.m].copy()
        return np.concatenate([first[o:], self.round(k + 1)[: o + self.m - self.n]])


def rs2_epoch_positions(num_samples: int, m: int, seed: int, epoch: int) -> np.ndarray:
    """int64 ``[m]``: the positions RS2 trains on in ``epoch`` (of ``num_samples``, seeded by ``seed``).

    Okanovic et al., ICLR 2024, Algorithm 1, without replacement: a fresh subset every epoch, no
    sample twice in an epoch, none again before all ``num_samples`` were used (leftovers of a round
    carried into the next epoch; see the module). Pure; a loader keeps one :class:`RS2Draws` instead
    so that consecutive epochs reuse the rounds."""
    return RS2Draws(num_samples, m, seed).epoch(epoch)
