"""Property checks applied to every importance function.

Each model is described once by a :class:`Case` (how to build it, where to
sample configurations, how precise it is); the checkers below run on every case
for which they apply, in the spirit of e3nn's ``assert_equivariant``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ase_rare import SoftCoreLJ, lj7_cluster
from ase_rare.importance import (
    REGISTRY,
    GridImportance,
    ImportanceFunction,
    MLPImportance,
    ReversedImportance,
    SchNetImportance,
    load_importance,
)
from ase_rare.importance.base import FORMAT_VERSION
from ase_rare.kernels import LangevinParameters
from ase_rare.sampling import REACHED_B, RETURNED_TO_A, STEP_CAP, PathSampler
from ase_rare.systems import lj7_system, two_channel_system
from ase_rare.theory import solve_grid_tpt

C3 = torch.tensor(lj7_cluster("C3").positions)


# ----------------------------------------------------------------------------
# The models


@dataclass
class Case:
    """One importance function and what the checkers need to know about it.

    Attributes
    ----------
    make : callable
        Builds the model (deterministically).
    sample : callable ``(rng, W) -> (W, N, 3)`` float64 positions in Å
        Typical configurations for the model.
    fd_step : float
        Central finite-difference step in Å.
    fd_atol : float
        Allowed |autograd − finite difference| of ∇ ln I in Å⁻¹.
    rtol : float
        Relative agreement expected between evaluations that are equal in exact
        arithmetic (a batch against single walkers, a transformed configuration).
    atomistic : bool
        Whether the model must be invariant to translation, rotation,
        reflection and permutation of identical atoms.
    """

    make: Callable[[], ImportanceFunction]
    sample: Callable[[np.random.Generator, int], torch.Tensor]
    fd_step: float
    fd_atol: float
    rtol: float
    atomistic: bool = False


def planar_points(rng, w, lo=-1.8, hi=1.8):
    """One atom at uniform (x, y) in [lo, hi]², z = 0."""
    x = np.zeros((w, 1, 3))
    x[:, 0, :2] = rng.uniform(lo, hi, (w, 2))
    return torch.tensor(x)


def lj7_configurations(rng, w, scale=0.08):
    """C3 with every in-plane coordinate displaced by N(0, scale²) Å²."""
    x = C3.repeat(w, 1, 1)
    noise = torch.tensor(rng.normal(0.0, scale, (w, 7, 3)))
    noise[..., 2] = 0.0
    return x + noise


#: Two elements, so that only permutations within an element are symmetries.
CLUSTER_Z = [18, 18, 18, 10, 10, 10]


def cluster_configurations(rng, w):
    """Random 3D clusters of six atoms: every pair at least 0.8 Å apart."""
    out = []
    while len(out) < w:
        x = rng.normal(0.0, 1.0, (6, 3))
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        if d[np.triu_indices(6, 1)].min() > 0.8:
            out.append(x)
    return torch.tensor(np.array(out))


def make_mlp():
    torch.manual_seed(1)
    return MLPImportance(
        1, coordinates=[(0, 0), (0, 1)], hidden=(16, 16), temperature_K=1000.0
    )


_GRID: dict[str, GridImportance] = {}


def make_grid():
    """The near-exact committor of the two-channel potential at 1000 K."""
    if "grid" not in _GRID:
        system = two_channel_system()
        result = solve_grid_tpt(
            system.start_A.calc,
            system.A,
            system.B,
            temperature_K=1000.0,
            box=(-2.2, 2.2, -2.2, 2.2),
            spacing=0.04,
        )
        _GRID["grid"] = GridImportance.from_grid_tpt(result)
    return copy.deepcopy(_GRID["grid"])


#: Typical logit of the test networks: I ≈ 0.05, so ln I, ln(1 − I) and both
#: gradients are far from their saturated limits and every check has teeth.
TYPICAL_LOGIT = -3.0


def make_schnet(dtype, sample, n_atoms=7, atomic_numbers=None):
    """A fresh SchNet whose output offset puts the typical logit at −3."""

    def make():
        torch.manual_seed(2)
        model = SchNetImportance(
            n_atoms, atomic_numbers, dtype=dtype, temperature_K=600.0
        )
        with torch.no_grad():
            s = model.logit(sample(np.random.default_rng(0), 16))
            model.output_offset += TYPICAL_LOGIT - s.mean()
        return model

    return make


# Tolerances, from the precision of each model.
# * Float64 models: the central difference is off by h²·|∂³ln I|/6 (≈1e-9 for
#   SchNet with h = 1e-5 Å; ∂³ln I is of order 10 Å⁻³) plus rounding
#   1e-16·|ln I|/h; batches, symmetric images and singles agree to ~1e-14.
# * The grid function is bilinear inside a cell, so only rounding (logits up to
#   40, h = 1e-6 Å) remains, ~1e-8 Å⁻¹.
# * Float32 SchNet: ln I carries a rounding error of ~|s|·6e-8 ≈ 1e-6 that does
#   not vary smoothly, so with h = 1e-2 Å the difference quotient is uncertain by
#   ~1e-4 Å⁻¹ and off by ~2e-4 Å⁻¹ of truncation (measured: 5e-4); batches and
#   symmetric images agree to a few 1e-6 (measured: 3e-6).
CASES = {
    "mlp-2d": Case(make_mlp, planar_points, fd_step=1e-5, fd_atol=1e-7, rtol=1e-12),
    "grid-2d": Case(make_grid, planar_points, fd_step=1e-6, fd_atol=1e-6, rtol=1e-12),
    "schnet-lj7-f64": Case(
        make_schnet("float64", lj7_configurations),
        lj7_configurations,
        fd_step=1e-5,
        fd_atol=1e-7,
        rtol=1e-12,
        atomistic=True,
    ),
    "schnet-lj7-f32": Case(
        make_schnet("float32", lj7_configurations),
        lj7_configurations,
        fd_step=1e-2,
        fd_atol=2e-3,
        rtol=1e-5,
        atomistic=True,
    ),
    "schnet-cluster-f64": Case(
        make_schnet("float64", cluster_configurations, 6, CLUSTER_Z),
        cluster_configurations,
        fd_step=1e-5,
        fd_atol=1e-7,
        rtol=1e-12,
        atomistic=True,
    ),
}
ATOMISTIC = [name for name, case in CASES.items() if case.atomistic]


@pytest.fixture(params=list(CASES))
def case(request) -> Case:
    return CASES[request.param]


@pytest.fixture(params=ATOMISTIC)
def atomistic_case(request) -> Case:
    return CASES[request.param]


# ----------------------------------------------------------------------------
# Reusable checkers


def assert_close(a, b, rtol, what):
    """|a − b| ≤ rtol · max(1, |b|), element-wise."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    err = (a - b).abs() / b.abs().clamp(min=1.0)
    assert err.max() <= rtol, f"{what}: largest relative difference {err.max():.3g}"


def check_shapes_and_dtypes(model: ImportanceFunction, x: torch.Tensor, rtol: float):
    w, n, _ = x.shape
    s = model.logit(x)
    log_i = model.log_importance(x)
    log_i2, grad = model.log_importance_and_gradient(x)
    assert s.shape == (w,)
    assert log_i.shape == (w,) and log_i.dtype == torch.float64
    assert grad.shape == (w, n, 3) and grad.dtype == torch.float64
    assert torch.isfinite(log_i).all() and torch.isfinite(grad).all()
    assert (log_i <= 0).all()
    assert not log_i2.requires_grad and not grad.requires_grad
    assert_close(log_i2, log_i.detach(), 1e-15, "ln I with and without gradient")

    singles = torch.cat([model.log_importance(x[k : k + 1]) for k in range(w)])
    assert_close(log_i.detach(), singles, rtol, "a batch against single walkers")
    grads = torch.cat(
        [model.log_importance_and_gradient(x[k : k + 1])[1] for k in range(w)]
    )
    assert_close(grad, grads, 10 * rtol, "batched gradient against single walkers")

    log_i, grad = model.log_importance_and_gradient(x[:0])
    assert log_i.shape == (0,) and grad.shape == (0, n, 3)


def finite_difference_gradient(f, x: torch.Tensor, h: float) -> torch.Tensor:
    """Central differences of ``f`` (W,) over every coordinate, in one batch."""
    w, n, _ = x.shape
    steps = h * torch.eye(3 * n, dtype=x.dtype).reshape(3 * n, n, 3)
    plus = f((x[:, None] + steps).reshape(-1, n, 3)).reshape(w, 3 * n)
    minus = f((x[:, None] - steps).reshape(-1, n, 3)).reshape(w, 3 * n)
    return ((plus - minus) / (2 * h)).reshape(w, n, 3)


def check_gradient(model, x, h, atol):
    _, grad = model.log_importance_and_gradient(x)
    with torch.no_grad():
        fd = finite_difference_gradient(model.log_importance, x, h)
    err = (grad - fd).abs().max()
    assert err <= atol, f"gradient off finite differences by {err:.3g} Å⁻¹"


def check_log_space(model, x, rtol):
    s = model.logit(x).detach()
    log_i = model.log_importance(x).detach()
    assert torch.equal(log_i, -F.softplus(-s))

    back = model.reversed()
    assert back.reversed() is model
    log_back = back.log_importance(x).detach()
    assert torch.equal(log_back, -F.softplus(s))
    # I + (1 − I) = 1, checked where both terms are representable.
    total = torch.exp(log_i) + torch.exp(log_back)
    assert_close(total, torch.ones_like(total), 1e-14, "I + (1 − I)")
    _, grad = model.log_importance_and_gradient(x)
    _, grad_back = back.log_importance_and_gradient(x)
    # ∇ln(1 − I) = −I/(1 − I) ∇ln I.
    ratio = torch.exp(log_i - log_back)[:, None, None]
    assert_close(grad_back, -ratio * grad, rtol, "gradient of ln(1 − I)")


def check_round_trip(model, x, tmp_path):
    path = tmp_path / "importance.pt"
    model.save(path)
    loaded = load_importance(path, n_atoms=x.shape[1])
    assert type(loaded) is type(model)
    assert loaded.temperature_K == model.temperature_K
    assert loaded.hparams == model.hparams
    assert torch.equal(loaded.log_importance(x), model.log_importance(x))
    assert torch.equal(
        loaded.log_importance_and_gradient(x)[1],
        model.log_importance_and_gradient(x)[1],
    )
    if model.n_atoms is not None:
        n = model.n_atoms
        with pytest.raises(ValueError, match=rf"{n} atoms.*has {n + 1}"):
            load_importance(path, n_atoms=n + 1)


def random_rotation(rng, proper=True) -> torch.Tensor:
    """A uniformly random 3×3 orthogonal matrix with determinant ±1."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) > 0) != proper:
        q[:, 0] = -q[:, 0]
    return torch.tensor(q)


def in_plane_rotation(angle) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor(
        [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )


def check_invariant(model, x, x_transformed, rtol, what):
    with torch.no_grad():
        assert_close(
            model.log_importance(x_transformed), model.log_importance(x), rtol, what
        )


def check_gradient_equivariant(model, x, rotation, rtol):
    """Rotating the configuration rotates ∇ ln I: g(x Qᵀ) = g(x) Qᵀ."""
    _, grad = model.log_importance_and_gradient(x)
    _, grad_rot = model.log_importance_and_gradient(x @ rotation.T)
    assert_close(grad_rot, grad @ rotation.T, rtol, "rotated gradient")


def same_element_permutation(rng, atomic_numbers) -> torch.Tensor:
    z = np.asarray(atomic_numbers)
    perm = np.arange(len(z))
    for element in np.unique(z):
        where = np.flatnonzero(z == element)
        perm[where] = rng.permutation(where)
    return torch.tensor(perm)


# ----------------------------------------------------------------------------
# Checks on every model


def test_shapes_dtypes_and_batching(case, rng):
    check_shapes_and_dtypes(case.make(), case.sample(rng, 5), case.rtol)


def test_gradient_matches_finite_differences(case, rng):
    check_gradient(case.make(), case.sample(rng, 3), case.fd_step, case.fd_atol)


def test_log_space_and_reverse_direction(case, rng):
    check_log_space(case.make(), case.sample(rng, 6), max(case.rtol, 1e-12))


def test_save_load_round_trip(case, rng, tmp_path):
    check_round_trip(case.make(), case.sample(rng, 4), tmp_path)


def test_far_from_B_no_underflow(case, rng):
    """With a logit near −200, ln I = s exactly; I itself would underflow."""
    model = case.make()
    x = case.sample(rng, 4)
    s_before = model.logit(x).detach()
    _, grad_before = model.log_importance_and_gradient(x)
    with torch.no_grad():
        if isinstance(model, MLPImportance):
            for p in model.net.parameters():
                p.zero_()
            model.net[-1].bias.fill_(-200.0)
        elif isinstance(model, GridImportance):
            model.grid.fill_(-200.0)
        else:
            model.output_offset -= 200.0
    s = model.logit(x).detach()
    log_i, grad = model.log_importance_and_gradient(x)
    assert (s < -150).all()
    # softplus(−s) = −s + ln(1 + e^s) and e^s ≈ 1e-87 is below float64's ulp of s.
    assert torch.equal(log_i, s)
    assert torch.isfinite(grad).all()
    if isinstance(model, SchNetImportance):
        # d ln I / ds = 1 − I: 1 here, sigmoid(−s) before; the offset leaves ∇s.
        grad_s = grad_before / torch.sigmoid(-s_before)[:, None, None]
        assert_close(grad, grad_s, max(case.rtol, 1e-12), "∇ ln I at s ≈ −200")
    else:
        assert (grad == 0).all()
        assert torch.equal(log_i, torch.full_like(log_i, -200.0))
    log_back = model.reversed().log_importance(x)
    assert (log_back < 0).all() and (log_back > -1e-80).all()


# ----------------------------------------------------------------------------
# Symmetries of the atomistic models


def test_translation_invariance(atomistic_case, rng):
    model, x = atomistic_case.make(), atomistic_case.sample(rng, 4)
    shift = torch.tensor(rng.normal(0.0, 50.0, 3))
    check_invariant(model, x, x + shift, atomistic_case.rtol, "translation")
    check_gradient_equivariant(model, x, torch.eye(3, dtype=x.dtype), 1e-12)


def test_rotation_invariance(atomistic_case, rng):
    model, x = atomistic_case.make(), atomistic_case.sample(rng, 4)
    for _ in range(3):
        q = random_rotation(rng)
        check_invariant(model, x, x @ q.T, atomistic_case.rtol, "rotation")
        check_gradient_equivariant(model, x, q, 10 * atomistic_case.rtol)
    q = in_plane_rotation(rng.uniform(0, 2 * math.pi))
    check_invariant(model, x, x @ q.T, atomistic_case.rtol, "rotation z")
    check_gradient_equivariant(model, x, q, 10 * atomistic_case.rtol)


def test_reflection_invariance(atomistic_case, rng):
    model, x = atomistic_case.make(), atomistic_case.sample(rng, 4)
    mirror_x = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=x.dtype))
    for q in (mirror_x, random_rotation(rng, proper=False)):
        check_invariant(model, x, x @ q.T, atomistic_case.rtol, "mirror")
        check_gradient_equivariant(model, x, q, 10 * atomistic_case.rtol)


def test_permutation_invariance(atomistic_case, rng):
    model, x = atomistic_case.make(), atomistic_case.sample(rng, 4)
    z = model.hparams["atomic_numbers"]
    for _ in range(3):
        perm = same_element_permutation(rng, z)
        check_invariant(model, x, x[:, perm], atomistic_case.rtol, "perm")
        _, grad = model.log_importance_and_gradient(x)
        _, grad_perm = model.log_importance_and_gradient(x[:, perm])
        assert_close(grad_perm, grad[:, perm], 10 * atomistic_case.rtol, "∇ perm")


def test_atomic_numbers_distinguish_elements(rng):
    """Swapping atoms of different elements changes the logit."""
    model = CASES["schnet-cluster-f64"].make()
    x = cluster_configurations(rng, 2)
    swapped = x[:, [3, 1, 2, 0, 4, 5]]
    assert (model.log_importance(x) - model.log_importance(swapped)).abs().min() > 1e-6


def test_float32_and_float64_agree(rng):
    """Same weights in both precisions: the float32 network rounds, no more."""
    single, double = CASES["schnet-lj7-f32"].make(), CASES["schnet-lj7-f64"].make()
    double.load_state_dict(single.state_dict())
    x = lj7_configurations(rng, 8)
    assert_close(single.log_importance(x), double.log_importance(x), 1e-5, "ln I")
    g32 = single.log_importance_and_gradient(x)[1]
    g64 = double.log_importance_and_gradient(x)[1]
    assert_close(g32, g64, 1e-4, "∇ ln I")


def test_schnet_graph_is_a_prefix_of_the_largest_batch(rng):
    """Generic path: smaller batches reuse the index tensors of the largest one."""
    model = CASES["schnet-lj7-f64"].make()
    model.evaluation = "generic"
    x = lj7_configurations(rng, 6)
    full = model.log_importance(x)
    cached = model._graphs[x.device]
    assert_close(model.log_importance(x[:2]), full[:2], 1e-12, "prefix batch")
    assert model._graphs[x.device] is cached
    assert model.n_pairs == 42


def test_schnet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least 2 atoms"):
        SchNetImportance(1)
    with pytest.raises(ValueError, match="3 entries for 4 atoms"):
        SchNetImportance(4, [18, 18, 18])
    with pytest.raises(ValueError, match="aggregation"):
        SchNetImportance(3, aggregation="max")
    with pytest.raises(ValueError, match="dtype"):
        SchNetImportance(3, dtype="float16")
    model = SchNetImportance(3, n_atom_basis=4, n_interactions=1, n_rbf=4)
    with pytest.raises(ValueError, match="made for 3 atoms"):
        model.logit(torch.zeros((1, 4, 3), dtype=torch.float64))


# ----------------------------------------------------------------------------
# Files and failures


@pytest.fixture
def saved_mlp(tmp_path):
    path = tmp_path / "mlp.pt"
    make_mlp().save(path)
    return path


def test_truncated_file_is_rejected(saved_mlp):
    data = saved_mlp.read_bytes()
    saved_mlp.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_importance(saved_mlp)
    saved_mlp.write_bytes(b"not an importance function")
    with pytest.raises(ValueError, match="not a readable"):
        load_importance(saved_mlp)


def test_newer_format_is_rejected(saved_mlp):
    data = torch.load(saved_mlp, weights_only=False)
    data["format_version"] = FORMAT_VERSION + 1
    torch.save(data, saved_mlp)
    with pytest.raises(ValueError, match="upgrade ase_rare"):
        load_importance(saved_mlp)


def test_unknown_class_is_rejected(saved_mlp):
    data = torch.load(saved_mlp, weights_only=False)
    data["class"] = "HopfieldImportance"
    torch.save(data, saved_mlp)
    with pytest.raises(ValueError, match="HopfieldImportance"):
        load_importance(saved_mlp)


def test_reversed_function_cannot_be_saved(tmp_path):
    with pytest.raises(TypeError, match="reversed"):
        make_mlp().reversed().save(tmp_path / "reversed.pt")
    assert isinstance(make_mlp().reversed(), ReversedImportance)


def test_registry_knows_every_importance_function():
    assert set(REGISTRY) >= {"GridImportance", "MLPImportance", "SchNetImportance"}


def test_nan_importance_raises(rng):
    model = make_mlp()
    with torch.no_grad():
        model.net[-1].bias.fill_(math.nan)
    with pytest.raises(FloatingPointError, match="NaN"):
        model.log_importance_and_gradient(planar_points(rng, 3))


# ----------------------------------------------------------------------------
# In the biased sampler


def lj7_exit_like_points(rng, system, n):
    """C3 displaced at random until outside A and B: stand-ins for exit points."""
    points = []
    while len(points) < n:
        x = lj7_configurations(rng, 1, scale=0.05)
        if not (system.A.contains(x).item() or system.B.contains(x).item()):
            points.append(x)
    return torch.cat(points)


@pytest.mark.parametrize("kernel", ["tilt", "candidates"])
def test_schnet_drives_the_path_sampler(kernel, rng):
    system = lj7_system()
    sampler = PathSampler(
        SoftCoreLJ(),
        CASES["schnet-lj7-f32"].make(),
        system.A,
        system.B,
        params=LangevinParameters(timestep_fs=0.005, temperature_K=600, friction=1.0),
        planar=True,
        kernel=kernel,
        n_candidates=4,
        max_steps=50,
        seed=3,
    )
    roots = lj7_exit_like_points(rng, system, 8)
    result = sampler.run(roots)
    assert np.isfinite(result.log_weight).all()
    # The network's drift (or its choice among candidates) reweights every path.
    assert (result.log_weight != 0).all()
    assert np.isfinite(result.log_importance_start).all()
    assert set(result.status) <= {REACHED_B, RETURNED_TO_A, STEP_CAP}
    assert (result.steps >= 1).all() and (result.steps <= 50).all()
    assert result.importance_evaluations > 0


def test_shipped_loader_takes_a_name_or_a_file(tmp_path):
    """``ase_rare.data.load_importance`` loads a shipped name or a saved file,
    and refuses a name that is neither."""
    from ase_rare import data

    shipped = data.load_importance("two-channel-1000K")
    path = tmp_path / "mine.pt"
    shipped.save(path)
    again = data.load_importance(str(path))
    x = torch.zeros((3, 1, 3), dtype=torch.float64)
    x[:, 0, 0] = torch.tensor([-0.5, 0.0, 0.5], dtype=torch.float64)
    assert torch.equal(shipped.log_importance(x), again.log_importance(x))
    with pytest.raises(FileNotFoundError, match="no shipped importance function"):
        data.load_importance("lj7-900K")
