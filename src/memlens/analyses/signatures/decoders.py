"""Joint multi-lag decoders: one model, one output head per lag k = 0..K.

Inputs are states X (N x D, dense) or :class:`IndexStates` (N x m indices into a D-dimensional
one-hot space, e.g. the context window of an n-gram model; a linear map of a sum of one-hots
is a sum of table rows, so it is computed with ``nn.EmbeddingBag`` instead of a dense
product). Dense states are whitened with the training covariance, z = (x - mean) U
diag(1/sqrt(lambda)) over the eigen-directions with lambda > 1e-6 lambda_max: a softmax
regression is invariant to an invertible linear map of its input, so the optimum is unchanged,
but recurrent units are strongly correlated and whitening removes the ill-conditioning that
otherwise makes gradient training slow.

Targets Y (N x (K+1), int64): Y[t, k] is the class of token t-k, -1 where excluded
(t-k < 0, or an untagged / unseen symbol). The loss is the sum over heads of each head's mean
cross-entropy over its valid positions:

    L = sum_k  mean_{t: Y[t,k] >= 0}  -log softmax(W_k z_t + b_k)[Y[t,k]]  +  lambda/2 |theta|^2

with z_t = x_t (linear) or z_t = relu(U x_t + c) (MLP, one hidden layer shared by all heads)
and lambda = 1 / N_train by default: the objective of scikit-learn's LogisticRegression(C=1)
per lag, the usual diagnostic-classifier recipe (measured: within 0.82 points of it per lag).
Training: Adam on minibatches (learning rate x ``decay`` per epoch), one pass over the
states per epoch; early stopping per head on
the last ``val_fraction`` of the training positions (contiguous, to avoid leaking neighbouring
states); each head keeps the weights of its best validation epoch. Calibration (temperature
scaling, Guo et al. 2017): per head a softmax temperature T_k from a grid is fitted on the
same early-stopping rows after training, p_k = softmax((W_k z + b_k) / T_k). It leaves the
argmax (accuracy) unchanged and makes the held-out cross-entropy, hence the information in
bits, that of a calibrated decoder rather than of an over-confident one. With
``early_stopping="calibrated"`` (the ``linear-fast`` default) the epochs are compared by
that calibrated loss instead of the loss at T = 1, and T_k is the exact optimum in the
grid's range (:func:`calibrated_cross_entropy`).
Seeded and deterministic on CPU.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from memlens.core.errors import MemlensError
from memlens.core.limits import shown
from memlens.models.states import IndexStates


def _since(clock: tuple[float, float]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) since ``clock`` = (perf_counter,
    process_time)."""
    return time.perf_counter() - clock[0], time.process_time() - clock[1]


def _adam(params: list[torch.Tensor], **options) -> torch.optim.Adam:
    """Adam with the fused kernel (one kernel per step: the step took 1.6 s instead of 0.2 s
    per epoch on the word benchmark) where this torch has it for these tensors (CPU: torch
    >= 2.4), else the default implementation."""
    try:
        return torch.optim.Adam(params, fused=True, **options)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, **options)


DECODERS = ("linear", "mlp", "linear-fast")
# "auto" (the default): linear-fast from this many decoded symbols on, else linear
AUTO_FAST_SYMBOLS = 1000
DECODER_CHOICES = ("auto", *DECODERS)


def lag_targets(classes: np.ndarray, max_lag: int) -> np.ndarray:
    """Y (N x (K+1)): Y[t, k] = classes[t-k], or -1 where t-k < 0."""
    n = len(classes)
    y = np.full((n, max_lag + 1), -1, dtype=np.int64)
    for k in range(max_lag + 1):
        if k < n:
            y[k:, k] = classes[: n - k]
    return y


class _Net(nn.Module):
    def __init__(self, dim: int, heads: int, classes: int, kind: str, hidden: int,
                 sparse: bool):
        super().__init__()
        self.heads, self.classes, self.kind, self.sparse = heads, classes, kind, sparse
        first = hidden if kind == "mlp" else heads * classes
        if sparse:
            self.inp = nn.EmbeddingBag(dim, first, mode="sum")
            nn.init.normal_(self.inp.weight, 0.0, 0.01)
            self.inp_bias = nn.Parameter(torch.zeros(first))
        else:
            self.inp = nn.Linear(dim, first)
        self.out = nn.Linear(hidden, heads * classes) if kind == "mlp" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.inp(x) + self.inp_bias if self.sparse else self.inp(x)
        if self.out is not None:
            z = self.out(torch.relu(z))
        return z.view(-1, self.heads, self.classes)


# calibration grid: ratio 1.072 between points from 1/4 to 16, with 1.0 exactly on it
TEMPERATURES = np.concatenate([np.geomspace(0.25, 1.0, 21)[:-1], [1.0],
                               np.geomspace(1.0, 16.0, 41)[1:]])


CHUNK_ELEMENTS = 2**24  # 64 MB of float32: the working buffer of calibrated_cross_entropy


@torch.no_grad()
def calibrated_cross_entropy(logits: torch.Tensor, y: torch.Tensor,
                             beta: np.ndarray | None = None, iters: int = 30,
                             tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Temperature scaling, solved exactly: per head k, the inverse temperature beta_k in
    [1/16, 4] (the range of TEMPERATURES) that minimises

        CE_k(beta) = mean_t [ log sum_c exp(beta s_tkc) - beta s_tky ]

    over the rows t with y_tk >= 0, for logits s (R x K' x C) and targets y (R x K').
    CE_k is convex in beta, with CE' = mean_t [E_p s - s_y] and CE'' = mean_t Var_p s
    (p = softmax(beta s)), so a Newton iteration safeguarded by bisection (in log beta)
    of the bracket kept by the sign of CE' converges in a few passes (a step past an end
    of the range tries that end once); ``beta`` (K') is the start (1 if None; the previous
    epoch's optimum is a good one). The logits are shifted by their row maximum once, in
    place (``logits`` is overwritten: no second full-size copy), d = s - max_c s <= 0, so
    each pass is exp(beta d) and two weighted sums, in row chunks through one buffer of
    about CHUNK_ELEMENTS floats (at least one row). -inf logits count as exp(-inf) = 0.
    Returns (CE at the optimum, +inf for a head without targets; beta), each (K',) float64.
    """
    if iters < 1:
        raise MemlensError(f"iters must be >= 1, got {iters}")
    heads = logits.shape[1]
    valid = (y >= 0).double()
    count = valid.sum(0)
    d = logits.sub_(logits.amax(-1, keepdim=True))  # in place: no second full-size copy
    d.clamp_(min=-1e30)  # -inf (a class ruled out) would give 0 * inf = nan below
    d_target = d.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1).double()
    chunk = max(1, CHUNK_ELEMENTS // max(1, heads * logits.shape[2]))
    buf = torch.empty_like(d[:chunk])
    beta = np.ones(heads) if beta is None else np.asarray(beta, dtype=np.float64).copy()
    lo, hi = np.full(heads, 1 / 16), np.full(heads, 4.0)
    lo_seen, hi_seen = np.zeros(heads, dtype=bool), np.zeros(heads, dtype=bool)
    beta = np.clip(beta, lo, hi)

    def mean(v: torch.Tensor) -> np.ndarray:
        return ((v.double() * valid).sum(0) / count.clamp(min=1)).numpy()

    target = mean(d_target)  # mean_t d_ty: the same at every beta

    for _ in range(iters):
        at = beta
        b = torch.from_numpy(beta).float()[None, :, None]
        z, m1, m2 = (torch.empty(d.shape[:2]) for _ in range(3))
        for r in range(0, len(d), chunk):  # row chunks through one bounded buffer
            dr = d[r:r + chunk]
            e = torch.mul(dr, b, out=buf[:len(dr)]).exp_()
            z[r:r + chunk] = e.sum(-1)
            m1[r:r + chunk] = e.mul_(dr).sum(-1)
            m2[r:r + chunk] = e.mul_(dr).sum(-1)
        m1, m2 = m1 / z, m2 / z
        ce = mean(z.log()) - beta * target
        slope = mean(m1) - target
        curvature = np.maximum(mean(m2 - m1 * m1), 1e-12)
        lo, lo_seen = np.where(slope < 0, beta, lo), lo_seen | (slope < 0)
        hi, hi_seen = np.where(slope > 0, beta, hi), hi_seen | (slope > 0)
        step = beta - slope / curvature
        # a step past an end of the range not yet evaluated tries that end
        new = np.where((step > lo) & (step < hi), step,
                       np.where((step >= hi) & ~hi_seen, hi,
                                np.where((step <= lo) & ~lo_seen, lo, np.sqrt(lo * hi))))
        if (np.abs(new - beta) <= tol * beta).all():
            break
        beta = new
    ce = np.where(count.numpy() > 0, ce, math.inf)
    return ce, np.where(count.numpy() > 0, at, 1.0)


@dataclass
class JointDecoder:
    """Trains all K+1 lag heads together; see the module docstring for the objective."""

    kind: str = "linear"
    hidden: int = 256
    lr: float = 0.1
    batch: int = 512
    max_epochs: int = 25
    patience: int = 2
    min_delta: float = 1e-3
    decay: float = 0.9
    val_fraction: float = 0.1
    weight_decay: float | None = None  # None: 1 / (training rows), sklearn's C = 1
    seed: int = 0
    block: int = 65536
    calibrate: bool = True
    early_stopping: str = "ce"  # or "calibrated"; see _head_loss
    history: list[dict] = field(default_factory=list)

    def __post_init__(self):
        if self.early_stopping not in ("ce", "calibrated"):
            raise MemlensError(f"unknown early_stopping {self.early_stopping!r}: choose ce or "
                               "calibrated")
        if self.kind not in ("linear", "mlp"):
            raise MemlensError(f"unknown decoder {self.kind!r}: choose linear, mlp or "
                               "linear-fast")

    # -- input handling -------------------------------------------------------------------
    def _rows(self, x, lo: int, hi: int) -> torch.Tensor:
        if isinstance(x, IndexStates):
            return torch.from_numpy(np.ascontiguousarray(x.idx[lo:hi], dtype=np.int64))
        rows = torch.from_numpy(np.asarray(x[lo:hi], dtype=np.float32))
        return (rows - self._mean) @ self._proj

    def _whiten(self, x, n: int) -> int:
        """Fit mean and whitening projection on rows 0..n; return the whitened width."""
        if isinstance(x, IndexStates):
            return x.dim
        d = x.shape[1]
        s = np.zeros(d)
        gram = np.zeros((d, d))
        for lo in range(0, n, self.block):
            b = np.asarray(x[lo:min(n, lo + self.block)], dtype=np.float64)
            s += b.sum(0)
            gram += b.T @ b
        mean = s / n
        cov = gram / n - np.outer(mean, mean)
        lam, vec = np.linalg.eigh((cov + cov.T) / 2)
        keep = lam > max(lam.max(), 0.0) * 1e-6 + 1e-12
        proj = vec[:, keep] / np.sqrt(lam[keep])
        if proj.shape[1] == 0:  # constant state: nothing to decode from
            proj = np.zeros((d, 1))
        self._mean = torch.from_numpy(mean.astype(np.float32))
        self._proj = torch.from_numpy(proj.astype(np.float32))
        return proj.shape[1]

    # -- training ---------------------------------------------------------------------------
    def fit(self, x, y: np.ndarray, classes: int) -> JointDecoder:
        """Fit on states ``x`` (N x D or IndexStates) and lag targets ``y`` (N x (K+1)).

        Small problems run single-threaded (thread synchronisation costs more than it saves
        on tiny matrices); the previous thread count is restored afterwards.
        """
        threads = torch.get_num_threads()
        width = (self.hidden if self.kind == "mlp" else y.shape[1] * classes)
        if (x.shape[1] if not isinstance(x, IndexStates) else 1) * width < 2**16:
            torch.set_num_threads(1)
        try:
            return self._fit(x, y, classes)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, x, y: np.ndarray, classes: int) -> JointDecoder:
        n, heads = y.shape
        if len(x) != n:
            raise MemlensError(f"{len(x)} states but {n} target rows")
        n_val = max(1, int(round(n * self.val_fraction)))
        n_tr = n - n_val
        if n_tr < 1:
            raise MemlensError(f"too few training states ({n}) for the decoders")
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        dim = self._whiten(x, n_tr)
        sparse = isinstance(x, IndexStates)
        self.net = _Net(dim, heads, classes, self.kind, self.hidden, sparse)
        start = self._init_net(x, y, n_tr, classes)
        if not start and self.max_epochs < 1:
            raise MemlensError(f"max_epochs must be >= 1 for a decoder trained from a random "
                               f"start, got {self.max_epochs}")
        decay = 1.0 / n_tr if self.weight_decay is None else self.weight_decay
        opt = _adam(list(self.net.parameters()), lr=self.lr, weight_decay=decay)
        best = np.full(heads, math.inf)
        best_epoch = np.zeros(heads, dtype=np.int64)
        since = np.zeros(heads, dtype=np.int64)
        self._snapshots: dict[int, dict] = {}
        self.history = []
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.decay)
        self._beta = None  # warm start of the calibrated early-stopping loss
        val_temperature: dict[int, np.ndarray] = {}  # per epoch, each head's temperature
        if start:  # the initialisation is a candidate too (epoch 0)
            if self.max_epochs > 0:  # nothing to compare it with otherwise
                best, val_temperature[0] = self._head_loss(x, y, n_tr, n)
            self._snapshots[0] = copy.deepcopy(self.net.state_dict())
        for epoch in range(1, self.max_epochs + 1):
            self.net.train()
            starts = np.arange(0, n_tr, self.block)
            rng.shuffle(starts)
            total, count = 0.0, 0
            for lo in starts:
                hi = min(n_tr, lo + self.block)
                xb_all, yb_all = self._rows(x, lo, hi), torch.from_numpy(y[lo:hi])
                perm = torch.from_numpy(rng.permutation(hi - lo))
                for b in range(0, hi - lo, self.batch):
                    sel = perm[b:b + self.batch]
                    yb = yb_all[sel]
                    logits = self.net(xb_all[sel])
                    valid = (yb >= 0).sum(0).clamp(min=1)
                    ce = F.cross_entropy(logits.reshape(-1, classes), yb.reshape(-1),
                                         ignore_index=-1, reduction="none").view(yb.shape)
                    loss = (ce.sum(0) / valid).sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(sel)
                    count += len(sel)
            sched.step()
            val, val_temperature[epoch] = self._head_loss(x, y, n_tr, n)
            improved = val < best - self.min_delta
            best = np.where(improved, val, best)
            best_epoch = np.where(improved, epoch, best_epoch)
            since = np.where(improved, 0, since + 1)
            if improved.any():
                self._snapshots[epoch] = copy.deepcopy(self.net.state_dict())
            self.history.append({"epoch": epoch, "train_loss": total / max(count, 1),
                                 "val_loss": float(np.mean(val))})
            if (since >= self.patience).all():
                break
        used = set(best_epoch.tolist())
        self._snapshots = {e: s for e, s in self._snapshots.items() if e in used}
        self.best_epoch = best_epoch
        self.epochs = len(self.history)
        self.temperature = np.ones(heads)
        if self.calibrate and self.early_stopping == "calibrated" and all(
                e in val_temperature for e in used):
            # each head's temperature was fitted with its best-epoch weights already
            self.temperature = np.array([val_temperature[e][h]
                                         for h, e in enumerate(best_epoch)])
        elif self.calibrate:
            self.temperature = self._fit_temperature(x, y, n_tr, n)
        return self

    def _init_net(self, x, y: np.ndarray, n_tr: int, classes: int) -> bool:
        """Hook: set initial weights of ``self.net``; True if they are a fitted start worth
        keeping (then epoch 0 competes in early stopping). The joint decoder starts from
        PyTorch's default initialisation."""
        return False

    @torch.no_grad()
    def _ce_grid(self, logits_of, y: np.ndarray, lo: int, hi: int,
                 temperatures: np.ndarray) -> np.ndarray:
        """Mean cross-entropy (nats) of softmax(logits / T) on rows lo..hi for every T of
        ``temperatures`` and head: (len(grid) x heads);
        +inf for a head without targets."""
        heads = y.shape[1]
        grid = torch.from_numpy(temperatures).float()
        tot, cnt = np.zeros((len(grid), heads)), np.zeros(heads)
        for a in range(lo, hi, self.block):
            b = min(hi, a + self.block)
            logits = logits_of(a, b)
            yb = torch.from_numpy(y[a:b])
            valid = yb >= 0
            index = yb.clamp(min=0).unsqueeze(-1)
            for g, t in enumerate(grid):
                got = torch.log_softmax(logits / t, dim=-1).gather(-1, index).squeeze(-1)
                tot[g] -= torch.where(valid, got, torch.zeros(())).sum(0).double().numpy()
            cnt += valid.sum(0).numpy()
        return np.where(cnt > 0, tot / np.maximum(cnt, 1), math.inf)

    def _head_loss(self, x, y: np.ndarray, lo: int, hi: int
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Per head, the validation loss used for early stopping and the temperature it was
        taken at: ``early_stopping="ce"``, the cross-entropy at T = 1; ``"calibrated"``, the
        cross-entropy at each head's best temperature (:func:`calibrated_cross_entropy`,
        warm-started from the previous epoch's), i.e. the loss that calibration will leave.
        The argmax does not depend on T, so the calibrated loss judges an epoch by its
        ranking of the classes, not by how over-confident its logits have grown. With
        ``calibrate=False`` no temperature will be applied, so the loss at T = 1 is used."""
        self.net.eval()
        if self.early_stopping == "calibrated" and self.calibrate:
            with torch.no_grad():
                logits = self.net(self._rows(x, lo, hi))
            ce, self._beta = calibrated_cross_entropy(logits, torch.from_numpy(y[lo:hi]),
                                                      self._beta)
            return ce, 1.0 / self._beta
        ce = self._ce_grid(lambda a, b: self.net(self._rows(x, a, b)), y, lo, hi, np.ones(1))
        return ce[0], np.ones(y.shape[1])

    def _fit_temperature(self, x, y: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Per head, the temperature T that minimises the mean cross-entropy of
        softmax(logits / T) on the early-stopping rows lo..hi, with each head's best-epoch
        weights: ``early_stopping="ce"``, the best T of the grid TEMPERATURES (T = 1 is on
        it, so calibration never raises that loss); ``"calibrated"``, the exact optimum in
        the grid's range (:func:`calibrated_cross_entropy`). The argmax, hence accuracy, is
        unchanged."""
        if self.early_stopping == "calibrated":  # (only reached with calibrate=True)
            _, beta = calibrated_cross_entropy(self._logits(x, lo, hi),
                                               torch.from_numpy(y[lo:hi]))
            return 1.0 / beta
        ce = self._ce_grid(lambda a, b: self._logits(x, a, b), y, lo, hi, TEMPERATURES)
        best = TEMPERATURES[np.argmin(ce, axis=0)]
        return np.where(np.isfinite(ce[0]), best, 1.0)

    # -- prediction -------------------------------------------------------------------------
    @torch.no_grad()
    def _logits(self, x, lo: int, hi: int) -> torch.Tensor:
        """Logits (rows x (K+1) x C), each head with its best-epoch weights."""
        xb = self._rows(x, lo, hi)
        out = None
        for epoch, state in self._snapshots.items():
            self.net.load_state_dict(state)
            self.net.eval()
            logits = self.net(xb)
            mask = torch.from_numpy(self.best_epoch == epoch)
            out = logits if out is None else torch.where(mask[None, :, None], logits, out)
        return out

    @torch.no_grad()
    def log_proba(self, x, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """Calibrated log-probabilities (rows x (K+1) x C): log softmax(logits_k / T_k)."""
        hi = len(x) if hi is None else hi
        temp = torch.from_numpy(self.temperature).float()
        return torch.log_softmax(self._logits(x, lo, hi) / temp[None, :, None], dim=-1)

    def evaluate(self, x, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per position and head: predicted class (N x (K+1)) and -log2 p(target) (NaN if
        excluded)."""
        n, heads = y.shape
        pred = np.zeros((n, heads), dtype=np.int64)
        nll = np.full((n, heads), np.nan)
        for a in range(0, n, self.block):
            b = min(n, a + self.block)
            lp = self.log_proba(x, a, b)
            pred[a:b] = lp.argmax(-1).numpy()
            yb = torch.from_numpy(y[a:b])
            got = lp.gather(-1, yb.clamp(min=0).unsqueeze(-1)).squeeze(-1).double().numpy()
            nll[a:b] = np.where(y[a:b] >= 0, -got / math.log(2), np.nan)
        return pred, nll


@dataclass
class FastLinearDecoder(JointDecoder):
    """``decoder="linear-fast"``: a linear softmax per lag for large symbol sets (thousands
    of word types), fitted in closed form plus a few convex scalars, then 3 Adam epochs.

    Why: the joint decoder's cost per epoch is that of the full softmax, N x D x (K+1) x C
    multiply-adds forward and again backward (plus Adam on (K+1) x C x D weights); with
    every word type of 20k tokens as a symbol (C = 2,736, K = 10) that is ~0.3 TFLOP per
    epoch, and 25 epochs from a random start took ~10 minutes on 2 idle cores.

    Fit, per lag k, on the whitened states z (whitening and the rows of z are shared by all
    lags; only the targets differ):

    1. Linear discriminant analysis (closed form): with class counts n_c, class means mu_c
       and the pooled within-class covariance S_w (shrunk towards its mean eigenvalue by
       ``shrinkage`` so that it is invertible when most classes have one or two examples),
       the LDA posterior is exactly a softmax with W_c = S_w^{-1} mu_c and
       b_c = -1/2 mu_c^T S_w^{-1} mu_c + log(n_c / n): the same model family as the
       softmax regression. Cost: one pass over the states (class sums by index_add) and a
       D x D solve per lag.
    2. LDA alone is badly over-confident for rare classes (a type seen once has its mean at
       one training state; held-out states after the same recent word lie close to it, so
       at long lags singletons win the argmax: measured 1-3% accuracy at lags 5-10 on the
       word case, below the majority class). A discriminative correction with few
       parameters: per lag and class-frequency group g (absent, 1, 2-3, 4-7, 8-15, 16-63,
       64+ training occurrences) a weight scale a_g and a bias scale b_g, logits_c =
       a_g(c) W_c z + b_g(c) b_c, fitted by L-BFGS (``scale_iters``; loss and gradient
       written out in :class:`_GroupScaleLoss`) on the cross-entropy of every
       ``scale_stride``-th early-stopping row (the last ``val_fraction`` of the training
       states, which the LDA did not see; default 2: 14 scalars per lag need far fewer
       rows than the 2,000 of the word case, and the measured accuracies did not move).
       The logits are linear in the scales, so the problem is convex.
    3. ``max_epochs`` (default 3) epochs of the joint decoder's Adam training from this
       start (``lr`` 0.01), with the start as "epoch 0" candidate of early stopping.
       Early stopping judges each epoch by its *calibrated* cross-entropy
       (``early_stopping="calibrated"``: each head at its own optimal temperature, found by
       :func:`calibrated_cross_entropy`), and each head keeps the temperature of its best
       epoch. From this start the epochs make the long-lag heads more accurate and more
       over-confident at once, so the loss at T = 1 rises while the ranking improves:
       judged at T = 1, lags >= 2 kept epoch 1 and lag 2 stayed 1.4 points below the joint
       decoder on the word case; judged calibrated, lags 1-3 keep epoch 3 and no lag is
       more than 0.36 points below it (docs/analyses/signatures.md).

    Index (one-hot window) states have no covariance to whiten: they get the joint
    decoder's training from its random start.

    After ``fit`` on dense states, ``timings`` maps "lda" (and "scales" where fitted) to
    (wall seconds, CPU seconds of the process) of that phase, for the word benchmark's
    breakdown.
    """

    lr: float = 0.01
    max_epochs: int = 3
    early_stopping: str = "calibrated"
    shrinkage: float = 0.02
    scale_groups: bool = True
    scale_iters: int = 50
    scale_stride: int = 2  # fit the scales on every scale_stride-th early-stopping row

    def __post_init__(self):
        self.kind = "linear"
        super().__post_init__()
        if int(self.scale_stride) < 1:
            raise MemlensError(f"scale_stride must be a positive integer, got "
                               f"{self.scale_stride!r}")

    def fit(self, x, y: np.ndarray, classes: int) -> JointDecoder:
        """As :meth:`JointDecoder.fit`; one-hot index states (n-gram windows) have no
        covariance to whiten, so they get the joint decoder's schedule from its random
        start."""
        if isinstance(x, IndexStates):
            self.lr, self.max_epochs = JointDecoder.lr, JointDecoder.max_epochs
            self.early_stopping = JointDecoder.early_stopping
        return super().fit(x, y, classes)

    @torch.no_grad()
    def _init_net(self, x, y: np.ndarray, n_tr: int, classes: int) -> bool:
        self.scales = None
        if isinstance(x, IndexStates):
            return False
        clock = (time.perf_counter(), time.process_time())
        heads = y.shape[1]
        z = torch.cat([self._rows(x, lo, min(n_tr, lo + self.block)).double()
                       for lo in range(0, n_tr, self.block)])
        d = z.shape[1]
        weight = torch.zeros(heads, classes, d, dtype=torch.float64)
        bias = torch.zeros(heads, classes, dtype=torch.float64)
        for k in range(heads):
            yk = torch.from_numpy(y[:n_tr, k])
            valid = yk >= 0
            if not valid.any():
                continue
            zk, yk = z[valid], yk[valid]
            n = float(len(yk))
            counts = torch.bincount(yk, minlength=classes).double()
            sums = torch.zeros(classes, d, dtype=torch.float64).index_add_(0, yk, zk)
            present = counts > 0
            means = sums / counts.clamp(min=1)[:, None]
            within = (zk.T @ zk - sums.T @ means) / n
            within = (within + within.T) / 2
            ridge = float(torch.trace(within)) / d
            within = (1 - self.shrinkage) * within + (self.shrinkage * ridge + 1e-6
                                                      ) * torch.eye(d, dtype=torch.float64)
            w = torch.linalg.solve(within, means.T).T  # C x d
            b = -0.5 * (w * means).sum(1) + torch.log(counts.clamp(min=1) / n)
            floor = float(b[present].min()) - 10.0
            weight[k] = torch.where(present[:, None], w, torch.zeros(()))
            bias[k] = torch.where(present, b, torch.full((), floor, dtype=torch.float64))
        self.net.inp.weight.copy_(weight.reshape(heads * classes, d).float())
        self.net.inp.bias.copy_(bias.reshape(-1).float())
        self.timings = {"lda": _since(clock)}
        if self.scale_groups and len(y) > n_tr:
            clock = (time.perf_counter(), time.process_time())
            self._fit_scales(x, y, n_tr, classes)
            self.timings["scales"] = _since(clock)
        return True

    def _fit_scales(self, x, y: np.ndarray, n_tr: int, classes: int) -> None:
        """Per head and class-frequency group g, fit a weight scale a_g and a bias scale b_g,
        logits_c = a_g(c) W_c z + b_g(c) bias_c, by minimising the cross-entropy on the
        early-stopping rows (convex: the logits are linear in the scales) with L-BFGS, and
        fold them into the weights."""
        heads = y.shape[1]
        with torch.no_grad():
            self.net.eval()
            stride = int(self.scale_stride)
            feats = self.net(self._rows(x, n_tr, len(y))[::stride]) - self.net.inp.bias.view(
                1, heads, classes)
            bias = self.net.inp.bias.view(heads, classes).clone()
        yv = torch.from_numpy(y[n_tr:][::stride])
        group = torch.zeros(heads, classes, dtype=torch.int64)
        edges = torch.tensor([1, 2, 4, 8, 16, 64], dtype=torch.float64)
        for k in range(heads):
            yk = torch.from_numpy(y[:n_tr, k])
            cnt = torch.bincount(yk[yk >= 0], minlength=classes).double()
            group[k] = torch.bucketize(cnt, edges, right=True)  # 0: absent
        groups = len(edges) + 1
        loss_of = _GroupScaleLoss(feats, bias, group, yv, groups)
        scale_w = torch.full((heads, groups), 1 / 16, dtype=torch.float64)
        scale_b = torch.full((heads, groups), 1 / 16, dtype=torch.float64)
        # start at temperature 16 (the top of the calibration grid): the raw LDA logits
        # (scales 1) are over-confident by tens of bits. (Measured: starting from the prior,
        # a_g = 0, L-BFGS diverged on the word case.)
        scale_w.requires_grad_(True)
        scale_b.requires_grad_(True)
        opt = torch.optim.LBFGS([scale_w, scale_b], lr=1.0, max_iter=self.scale_iters,
                                line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            loss, grad_w, grad_b = loss_of(scale_w.detach(), scale_b.detach())
            scale_w.grad, scale_b.grad = grad_w, grad_b
            return loss

        opt.step(closure)
        scale_w, scale_b = scale_w.detach(), scale_b.detach()
        with torch.no_grad():
            a = scale_w.gather(1, group).float()
            b = scale_b.gather(1, group).float()
            w = self.net.inp.weight.view(heads, classes, -1)
            self.net.inp.weight.copy_((w * a[..., None]).view(heads * classes, -1))
            self.net.inp.bias.copy_((bias * b).view(-1))
        self.scales = (scale_w.numpy(), scale_b.numpy())


class _GroupScaleLoss:
    """The group-scale objective of :meth:`FastLinearDecoder._fit_scales` and its gradient,
    written out (no autograd: 5x faster; the softmax runs in one preallocated buffer).

    With features f (R x K' x C; K' heads), bias beta (K' x C), class groups g (K' x C) and
    targets y (R x K', -1 excluded), the logits are s_tc = a_g(c) f_tc + b_g(c) beta_c and

        L = sum_k mean_t [ logsumexp_c s_tkc - s_tky ],
        dL/da_g = sum_k mean_t [ sum_{c in g} p_tkc f_tkc - [g(y) = g] f_tky ],
        dL/db_g = sum_k mean_t [ sum_{c in g} p_tkc beta_kc - [g(y) = g] beta_ky ],

    with p = softmax(s). The target terms are linear in the scales, so their sums per group
    are computed once. Scales and gradients are (K' x G) float64; the softmax runs in one
    preallocated float32 buffer of f's size.
    """

    def __init__(self, feats: torch.Tensor, bias: torch.Tensor, group: torch.Tensor,
                 y: torch.Tensor, groups: int):
        heads = bias.shape[0]
        self.feats, self.bias, self.group, self.groups = feats, bias, group, groups
        valid = y >= 0
        self.valid = valid.float()
        self.count = valid.sum(0).clamp(min=1).double()
        index = y.clamp(min=0)
        target_f = (feats.gather(-1, index.unsqueeze(-1)).squeeze(-1) * self.valid).double()
        target_b = (bias.gather(1, index.T).T * self.valid).double()
        target_g = group.gather(1, index.T)  # K' x R
        zero = torch.zeros(heads, groups, dtype=torch.float64)
        self.target_w = zero.scatter_add(1, target_g, target_f.T)
        self.target_b = zero.scatter_add(1, target_g, target_b.T)
        self.buf = torch.empty_like(feats)

    def __call__(self, scale_w: torch.Tensor, scale_b: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(L, dL/da, dL/db) at the scales a = ``scale_w``, b = ``scale_b`` (K' x G)."""
        a = scale_w.gather(1, self.group).float()
        b = scale_b.gather(1, self.group).float() * self.bias
        p = torch.mul(self.feats, a, out=self.buf).add_(b)
        top = p.amax(-1, keepdim=True)
        total = p.sub_(top).exp_().sum(-1, keepdim=True)
        lse = (top + total.log()).squeeze(-1)
        loss = ((lse * self.valid).double().sum(0) - (self.target_w * scale_w).sum(1)
                - (self.target_b * scale_b).sum(1)) / self.count
        p.mul_(self.valid.unsqueeze(-1) / total)  # softmax, zero on excluded rows
        mass = p.sum(0).double()  # K' x C
        mass_f = p.mul_(self.feats).sum(0).double()
        zero = torch.zeros_like(scale_w)
        grad_w = zero.scatter_add(1, self.group, mass_f) - self.target_w
        grad_b = zero.scatter_add(1, self.group, mass * self.bias) - self.target_b
        return (loss.sum(), grad_w / self.count[:, None], grad_b / self.count[:, None])


def choose_decoder(name: str, n_symbols: int) -> str:
    """The decoder a signature uses: ``name``, or for "auto" "linear-fast" when there are
    :data:`AUTO_FAST_SYMBOLS` (1000) decoded symbols or more (word types: the same held-out
    accuracy about 5x faster, docs/analyses/signatures.md, "Large symbol sets") and "linear"
    below."""
    if name == "auto":
        return "linear-fast" if n_symbols >= AUTO_FAST_SYMBOLS else "linear"
    if name not in DECODERS:
        raise MemlensError(f"unknown decoder {name!r}: choose {', '.join(DECODER_CHOICES)}")
    return name


def check_decoder_options(cls: type, options) -> None:
    """Refuse ``decoder_options`` that ``cls`` does not take, or of the wrong type or range
    (a one-line MemlensError naming the option): ints are positive (at most 2**24; hidden at
    most 65536), floats finite and non-negative (lr > 0, val_fraction in (0, 1))."""
    import dataclasses
    import math
    import numbers

    if not isinstance(options, dict):
        raise MemlensError(f"decoder_options must be a dict of decoder keywords, got "
                           f"{type(options).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)
              if f.name not in ("kind", "seed", "history")}
    for key, value in options.items():
        if key not in fields:
            raise MemlensError(f"unknown decoder option {shown(key)}: choose "
                               f"{', '.join(fields)}")
        default, what = fields[key].default, f"decoder option {key}"
        if isinstance(default, bool) or isinstance(default, str):
            if type(value) is not type(default):
                raise MemlensError(f"{what} must be a {type(default).__name__}, got "
                                   f"{shown(value)}")
        elif isinstance(default, int):
            high = 1 << 16 if key == "hidden" else 1 << 24
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
                    or not 1 <= value <= high:
                raise MemlensError(f"{what} must be an integer in 1..{high}, got "
                                   f"{shown(value)}")
        elif value is not None or default is not None:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not math.isfinite(value) or value < 0 or (key == "lr" and value == 0) \
                    or (key == "val_fraction" and not 0 < value < 1):
                raise MemlensError(f"{what} must be a finite number "
                                   f"{'in (0, 1)' if key == 'val_fraction' else '>= 0'}, "
                                   f"got {shown(value)}")


def make_decoder(name: str, seed: int = 0, **options) -> JointDecoder:
    """The decoder called ``name`` (one of :data:`DECODERS`) with its options."""
    check_decoder_options(FastLinearDecoder if name == "linear-fast" else JointDecoder,
                          options)
    if name == "linear-fast":
        return FastLinearDecoder(seed=seed, **options)
    if name not in DECODERS:
        raise MemlensError(f"unknown decoder {name!r}: choose {', '.join(DECODERS)}")
    return JointDecoder(kind=name, seed=seed, **options)
