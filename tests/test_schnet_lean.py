"""The lean SchNet path against SchNetPack's own neighbour-list evaluation.

Both paths read the same modules and weights, so every check compares them on
the same network: values, gradients in the positions, gradients in the
parameters (also through ``∇ ln I``, as the training losses need), the cutoff,
odd batch sizes, precision and devices. The tests marked ``cuda`` run only
where a GPU is present.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from schnetpack.nn.activations import shifted_softplus
from torch import nn

from ase_rare import lj7_cluster
from ase_rare.importance import MLPImportance, SchNetImportance, load_importance
from ase_rare.importance._schnet_lean import ShiftedSoftplus
from ase_rare.kernels import LangevinParameters
from ase_rare.potentials import SoftCoreLJ
from ase_rare.sampling import PathSampler
from ase_rare.systems import lj7_system

C3 = torch.tensor(lj7_cluster("C3").positions)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Tolerances, relative to max(1, |value|). Float64: the two paths add the same
# terms in another order, so they agree to a few ulp of the largest
# intermediate (measured 5e-15). Float32: the same reordering at 6e-8 per
# operation through three interactions, plus the cheaper shifted softplus
# (same function, its own rounding); measured 2e-6 on logits of order 5.
RTOL = {"float64": 1e-12, "float32": 2e-5}


def lj7_configurations(rng, w, scale=0.15):
    """C3 with every in-plane coordinate displaced by N(0, scale²) Å²."""
    noise = torch.tensor(rng.normal(0.0, scale, (w, 7, 3)))
    noise[..., 2] = 0.0
    return C3.repeat(w, 1, 1) + noise


def cluster_configurations(rng, w, n=6):
    """Random 3D clusters: every pair at least 0.8 Å apart."""
    out = []
    while len(out) < w:
        x = rng.normal(0.0, 1.2, (n, 3))
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        if d[np.triu_indices(n, 1)].min() > 0.8:
            out.append(x)
    return torch.tensor(np.array(out))


def pair_distances(x):
    n = x.shape[1]
    i, j = torch.triu_indices(n, n, 1)
    return (x[:, j] - x[:, i]).norm(dim=-1)


def both_paths(model, x):
    """ln I and ∇ ln I from the generic and the lean path of one model."""
    out = {}
    for evaluation in ("generic", "lean"):
        model.evaluation = evaluation
        out[evaluation] = model.log_importance_and_gradient(x)
    model.evaluation = "auto"
    return out["generic"], out["lean"]


def assert_close(a, b, rtol, what):
    """|a − b| ≤ rtol · max(1, |b|), element-wise."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    err = ((a - b).abs() / b.abs().clamp(min=1.0)).max()
    assert err <= rtol, f"{what}: largest relative difference {err:.3g}"


# Networks with something to compare: a cutoff shorter than the cluster (pairs
# on both sides of it), two elements, averaging, a rectangular head, even and
# odd atom counts, one interaction, a single pair.
NETWORKS = {
    "lj7-cutoff-2A": (
        dict(n_atoms=7, cutoff=2.0, logit_offset=-3.0),
        lj7_configurations,
    ),
    "lj7-defaults": (dict(n_atoms=7, logit_offset=-3.0), lj7_configurations),
    "cluster-two-elements-avg": (
        dict(
            n_atoms=6,
            atomic_numbers=[18, 18, 18, 10, 10, 10],
            cutoff=2.5,
            aggregation="avg",
            n_hidden=16,
            n_layers=3,
            n_atom_basis=24,
        ),
        cluster_configurations,
    ),
    "pair": (
        dict(n_atoms=2, n_interactions=1, n_rbf=8, cutoff=3.0),
        lambda rng, w: cluster_configurations(rng, w, n=2),
    ),
}


def make(name, dtype):
    kwargs, sample = NETWORKS[name]
    torch.manual_seed(5)
    return SchNetImportance(**kwargs, dtype=dtype), sample


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_lean_path_matches_schnetpack(name, dtype, rng):
    model, sample = make(name, dtype)
    assert model.uses_lean_path()
    # A large batch first, so that the generic path's index tensors are a
    # longer prefix than the smaller, irregular batches after it.
    for w in (257, 37, 1, 5):
        x = sample(rng, w)
        (log_g, grad_g), (log_l, grad_l) = both_paths(model, x)
        assert log_l.dtype == grad_l.dtype == torch.float64
        assert_close(log_l, log_g, RTOL[dtype], f"ln I, {w} walkers")
        assert_close(grad_l, grad_g, RTOL[dtype], f"∇ ln I, {w} walkers")


def test_cutoff_cases_are_exercised(rng):
    """The short-cutoff network sees pairs inside and beyond its cutoff."""
    kwargs, sample = NETWORKS["lj7-cutoff-2A"]
    d = pair_distances(sample(rng, 257))
    # Measured: about 70 % inside and 28 % beyond.
    assert (d < kwargs["cutoff"]).float().mean() > 0.2
    assert (d > kwargs["cutoff"]).float().mean() > 0.2


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pairs_all_beyond_the_cutoff(dtype):
    # With every pair beyond the cutoff the filters vanish: the logit is the
    # head on the bare embeddings and the gradient is exactly zero, both paths.
    model, _ = make("lj7-cutoff-2A", dtype)
    x = torch.zeros((3, 7, 3), dtype=torch.float64)
    x[:, :, 0] = 2.5 * torch.arange(7.0)
    x[1, :, 1] = 0.3
    (log_g, grad_g), (log_l, grad_l) = both_paths(model, x)
    assert_close(log_l, log_g, RTOL[dtype], "ln I")
    assert torch.equal(grad_l, torch.zeros_like(grad_l))
    assert torch.equal(grad_g, torch.zeros_like(grad_g))
    assert torch.equal(log_l, log_l[:1].expand(3))


def test_parameter_gradients_match_through_the_drift(rng):
    """Training losses (also on ∇ ln I, double backward) see the same network."""
    model, sample = make("lj7-cutoff-2A", "float64")
    x = sample(rng, 16)

    def grads(evaluation):
        model.evaluation = evaluation
        model.zero_grad()
        xg = x.clone().requires_grad_(True)
        log_i = model.log_importance(xg)
        (g,) = torch.autograd.grad(log_i.sum(), xg, create_graph=True)
        loss = (log_i**2).mean() + (g**2).sum(dim=(1, 2)).mean()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    generic, lean = grads("generic"), grads("lean")
    assert generic.keys() == lean.keys()
    for name in generic:
        assert_close(lean[name], generic[name], 1e-10, f"∂loss/∂{name}")


def test_shifted_softplus_is_schnetpacks():
    z64 = torch.cat(
        [
            torch.linspace(-120.0, 120.0, 4801, dtype=torch.float64),
            torch.tensor([0.0, 19.999, 20.0, 20.001, -1e-8, 1e-8, 700.0, -800.0]),
        ]
    )
    # Float64: to rounding (|ssp| ≤ 800 here, 2e-16 relative). Float32: the
    # two formulas each round at 6e-8; ×4 of max(1, |value|) covers both.
    for z, rtol in ((z64, 1e-14), (z64.float(), 2.5e-7)):
        assert_close(ShiftedSoftplus.apply(z), shifted_softplus(z), rtol, str(z.dtype))
    assert torch.isnan(ShiftedSoftplus.apply(torch.tensor([math.nan])))

    # Finite differences resolve the derivative only where it is above the
    # rounding of the value over the step (e^z ≫ 1e-10), and not across the
    # switch at z = 20 (a step of log1p(e^−20) = 2e-9 there).
    z = torch.cat([torch.linspace(-12.0, 12.0, 49), torch.tensor([19.5, 20.5, 30.0])])
    z = z.double().requires_grad_(True)
    assert torch.autograd.gradcheck(ShiftedSoftplus.apply, (z,))
    assert torch.autograd.gradgradcheck(ShiftedSoftplus.apply, (z,))
    batched = torch.func.vmap(ShiftedSoftplus.apply)(z.detach().reshape(-1, 1))
    assert torch.equal(batched.flatten(), ShiftedSoftplus.apply(z.detach()))


def test_auto_falls_back_and_lean_refuses(rng):
    model, sample = make("lj7-defaults", "float64")
    x = sample(rng, 4)
    # A layer the lean path does not know: "auto" must take the generic path.
    model.representation.interactions[0].filter_network.append(nn.Tanh())
    model.evaluation = "generic"
    expected = model.log_importance(x)
    model.evaluation = "auto"
    assert not model.uses_lean_path()
    assert torch.equal(model.log_importance(x), expected)
    model.evaluation = "lean"
    with pytest.raises(NotImplementedError, match="layers other than Dense"):
        model.log_importance(x)
    with pytest.raises(ValueError, match="evaluation must be one of"):
        model.evaluation = "fast"
    with pytest.raises(ValueError, match="evaluation must be one of"):
        SchNetImportance(3, evaluation="dense")


def test_saved_files_do_not_depend_on_the_path(rng, tmp_path):
    """Same state dict and settings whatever the path; a loaded file is lean."""
    model, sample = make("lj7-cutoff-2A", "float32")
    generic = SchNetImportance(
        **NETWORKS["lj7-cutoff-2A"][0], dtype="float32", evaluation="generic"
    )
    assert generic.state_dict().keys() == model.state_dict().keys()
    assert "evaluation" not in model.hparams

    model.evaluation = "generic"
    x = sample(rng, 9)
    before = model.log_importance_and_gradient(x)
    model.save(tmp_path / "f.pt")
    loaded = load_importance(tmp_path / "f.pt", n_atoms=7)
    assert loaded.evaluation == "auto" and loaded.uses_lean_path()
    after = loaded.log_importance_and_gradient(x)
    assert_close(after[0], before[0], RTOL["float32"], "ln I after loading")
    assert_close(after[1], before[1], RTOL["float32"], "∇ ln I after loading")


def test_float32_network_float64_positions(rng):
    """The precision contract of the Notes holds on the lean path."""
    model, sample = make("lj7-cutoff-2A", "float32")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x = sample(rng, 6)
    s = model.logit(x)
    log_i, grad = model.log_importance_and_gradient(x)
    assert s.dtype == log_i.dtype == grad.dtype == torch.float64
    # Pair vectors are formed in float64 before the cast: a translation by
    # 1e6 Å changes the float64 differences by at most ~1e-10 Å, far below
    # float32 resolution, so the network sees the same inputs.
    far = model.log_importance_and_gradient(x + 1e6)
    assert_close(far[0], log_i, 1e-6, "ln I after a far translation")
    assert_close(far[1], grad, 1e-5, "∇ ln I after a far translation")


def test_wrong_device_is_named():
    model, _ = make("pair", "float64")
    x = torch.zeros((1, 2, 3), dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match="move the importance function"):
        model.logit(x)


# ----------------------------------------------------------------------------
# The biased step: exact weights with a frozen drift, no host round trips


def lj7_sampler(importance, drift_refresh=1, kernel="tilt", device="cpu"):
    system = lj7_system()
    return PathSampler(
        SoftCoreLJ(),
        importance,
        system.A,
        system.B,
        params=LangevinParameters(timestep_fs=0.005, temperature_K=600, friction=1.0),
        planar=True,
        kernel=kernel,
        n_candidates=3,
        drift_refresh=drift_refresh,
        max_steps=50,
        seed=3,
        device=device,
    )


def test_frozen_drift_weight_is_the_exact_density_ratio(rng):
    """With the drift refreshed every k steps each increment is still exactly
    ln K(x → x′) − ln K_I(x → x′) for the drift actually applied: the one from
    the last refresh, recomputed here independently of the sampler."""
    k = 3
    model, _ = make("lj7-cutoff-2A", "float32")
    sampler = lj7_sampler(model, drift_refresh=k)
    p = sampler.params
    sigma2 = p.noise_scale**2
    free = sampler.free_mask(7)
    x = lj7_configurations(rng, 32, scale=0.05)
    drift = None
    frozen_at = x
    for step in range(2 * k + 1):
        if step % k == 0:
            frozen_at = x
        evaluations = sampler._evaluations
        new, dlogw, drift, *_ = sampler.advance(x, drift, step, free)
        assert sampler._evaluations - evaluations == (32 if step % k == 0 else 0)

        g = model.log_importance_and_gradient(frozen_at)[1] * free
        mean = x + p.mobility_step * SoftCoreLJ().batch_energy_forces(x)[1]
        unbiased = ((new - mean) ** 2).sum(dim=(1, 2))
        biased = ((new - mean - sigma2 * g) ** 2).sum(dim=(1, 2))
        expected = -(unbiased - biased) / (2 * sigma2)
        # Both sides in float64 from the same positions; they differ by the
        # rounding of |x′ − m|² / σ² (σ ≈ 0.03 Å, |ξ| ≈ 4): ~1e-12.
        assert_close(dlogw, expected, 1e-9, f"Δ ln w at step {step}")
        x = new


@pytest.fixture
def no_host_copies(monkeypatch):
    """Make every Python-level copy of a tensor to the host raise."""

    def forbidden(self, *args, **kwargs):
        raise AssertionError("a tensor was copied to the host inside the step")

    def install():
        for name in ("cpu", "numpy", "tolist", "item"):
            monkeypatch.setattr(torch.Tensor, name, forbidden)

    return install


@pytest.mark.parametrize("kernel", ["tilt", "candidates"])
def test_biased_step_makes_no_host_copies(kernel, rng, no_host_copies):
    # Scalar checks (`bool(...)`, e.g. "any walker in B?") synchronise but copy
    # no data; what must not happen is a walker tensor travelling to numpy.
    model, _ = make("lj7-defaults", "float32")
    sampler = lj7_sampler(model, drift_refresh=2, kernel=kernel)
    free = sampler.free_mask(7)
    x = lj7_configurations(rng, 64, scale=0.05)
    no_host_copies()
    drift = None
    for step in range(4):
        x, _, drift, *_ = sampler.advance(x, drift, step, free)


def test_ensemble_copies_to_the_host_per_batch_not_per_step(monkeypatch):
    # A batch of 10 or of 200 steps makes the same host copies: the results,
    # once, at its end. (Scalar checks such as "did any walker reach B?" only
    # synchronise.) Hot 2D system, plain MLP, branching on.
    from setups import HOT_2D_DT, HOT_2D_K, hot_2d_inputs

    from ase_rare.ensemble import Branching, Ensemble

    system, _, flux = hot_2d_inputs()
    torch.manual_seed(1)
    importance = MLPImportance(
        1, coordinates=[(0, 0), (0, 1)], hidden=(16, 16), temperature_K=HOT_2D_K
    )
    counts = {}
    for max_steps in (10, 200):
        ens = Ensemble(
            system.start_A,
            importance,
            system.A,
            system.B,
            temperature_K=HOT_2D_K,
            timestep=HOT_2D_DT,
            flux=flux,
            n_roots=32,
            roots_per_batch=32,
            branching=Branching(interval=5),
            max_steps=max_steps,
        )
        calls = []
        with monkeypatch.context() as patch:
            for name in ("cpu", "numpy", "tolist", "item"):
                original = getattr(torch.Tensor, name)

                def counted(self, *args, _o=original, _n=name, _calls=calls, **kw):
                    _calls.append(_n)
                    return _o(self, *args, **kw)

                patch.setattr(torch.Tensor, name, counted)
            batch = ens._run_batch(0)
        assert batch.n_failures + batch.n_successes > 0
        counts[max_steps] = sorted(calls)
    assert counts[10] == counts[200], counts


# ----------------------------------------------------------------------------
# On a GPU


@cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lean_path_on_cuda_matches_cpu(dtype, rng):
    model, sample = make("lj7-cutoff-2A", dtype)
    x = sample(rng, 300)
    cpu = model.log_importance_and_gradient(x)
    model.to("cuda")
    assert model.uses_lean_path()
    log_i, grad = model.log_importance_and_gradient(x.to("cuda"))
    assert log_i.device.type == grad.device.type == "cuda"
    assert log_i.dtype == grad.dtype == torch.float64
    # Other kernels, other summation order: float tolerance, not bitwise.
    assert_close(log_i.cpu(), cpu[0], RTOL[dtype], "ln I on the GPU")
    assert_close(grad.cpu(), cpu[1], RTOL[dtype], "∇ ln I on the GPU")
    model.evaluation = "generic"
    generic = model.log_importance_and_gradient(x.to("cuda"))
    assert_close(log_i, generic[0], RTOL[dtype], "lean against generic on the GPU")


@cuda
@pytest.mark.parametrize("kernel", ["tilt", "candidates"])
def test_path_sampler_stays_on_cuda(kernel, rng):
    model, _ = make("lj7-defaults", "float32")
    sampler = lj7_sampler(
        model.to("cuda"), drift_refresh=2, kernel=kernel, device="cuda"
    )
    free = sampler.free_mask(7)
    assert free.device.type == "cuda"
    x = lj7_configurations(rng, 64, scale=0.05).to("cuda")
    drift = None
    for step in range(4):
        x, dlogw, drift, energy, in_a, in_b = sampler.advance(x, drift, step, free)
        for t in (x, dlogw, energy, in_a, in_b) + (
            (drift,) if drift is not None else ()
        ):
            assert t.device.type == "cuda"
        assert dlogw.dtype == torch.float64 and x.dtype == torch.float64
    result = sampler.run(lj7_configurations(rng, 16, scale=0.05).cuda())
    assert np.isfinite(result.log_weight).all()


@cuda
def test_ensemble_stays_on_cuda():
    from setups import HOT_2D_DT, HOT_2D_K, hot_2d_inputs

    from ase_rare.ensemble import Branching, Ensemble

    system, _, flux = hot_2d_inputs()
    torch.manual_seed(1)
    importance = MLPImportance(
        1, coordinates=[(0, 0), (0, 1)], hidden=(16, 16), temperature_K=HOT_2D_K
    ).to("cuda")
    ens = Ensemble(
        system.start_A,
        importance,
        system.A,
        system.B,
        temperature_K=HOT_2D_K,
        timestep=HOT_2D_DT,
        flux=flux,
        n_roots=32,
        roots_per_batch=16,
        branching=Branching(interval=5),
        max_steps=2000,
        device="cuda",
    )
    seen = []

    def check():
        pop = ens._population
        seen.append(pop.positions.device.type == pop.log_weight.device.type == "cuda")

    ens.attach_step(check, interval=1)
    result = ens.run()
    assert seen and all(seen)
    assert math.isfinite(result.success_probability)
