"""The statistician's references and the hierarchical meta-learner, against plain loops."""

import dataclasses

import numpy as np
import pytest
import torch

from spatialmeta.data import synthetic_region_tasks
from spatialmeta.learn import references as R
from spatialmeta.learn.algorithms.hier import (
    HierarchicalLearner,
    _LowRankPosterior,
)
from spatialmeta.learn.config import LearnConfig
from spatialmeta.learn.evaluate import evaluate
from spatialmeta.learn.metrics import interval_score, scores
from spatialmeta.tasks import spatial_holdout


def _setup(support=24, n_time=120, seed=0, n_regions=25):
    tasks = synthetic_region_tasks(n_regions, n_time, seed=seed)
    held = spatial_holdout(tasks.n_regions, 0.3, seed=seed)
    split = tasks.split(held_out=held, test_start=tasks.time[n_time - 24], support=support)
    return tasks, split


def _neighbours(tasks, r):
    ei = tasks.graph.data.edge_index.numpy()
    return sorted(set(ei[0][ei[1] == r]) - {r})


def test_seasonal_history_matches_a_loop():
    tasks, split = _setup()
    known = split.known(tasks.n_time)
    origins = np.array([96, 101, 110])
    h = R.seasonal_history(tasks, known, known, origins, period=12)
    y = tasks.series.astype(np.float64)
    for r in (0, 7, int(np.flatnonzero(split.held_out)[0])):
        for i, o in enumerate(origins):
            for p in (0, 5, 11):
                ts = [t for t in range(o) if t % 12 == p and known[r, t]]
                assert h.count[r, i, p] == len(ts)
                np.testing.assert_allclose(h.total[r, i, p], y[r, ts].sum(), rtol=1e-9)
            # neighbours' climatology: the mean of each known neighbour's slot mean
            nb = [j for j in _neighbours(tasks, r) if known[j, :o].any()]
            p = 3
            means = [y[j, [t for t in range(o) if t % 12 == p and known[j, t]]].mean() for j in nb]
            np.testing.assert_allclose(h.nbr_clim[r, i, p], np.mean(means), rtol=1e-9)
            last = max(t for t in range(o) if known[r, t])
            assert h.last_lag[r, i] == o - last
            np.testing.assert_allclose(h.last_value[r, i], y[r, last])


def test_references_by_hand_at_one_origin():
    tasks, split = _setup()
    fit = R.fit_references(tasks, split, 3)
    fc = {f.method: f for f in R.references(tasks, split, 3, fit=fit)}
    held = np.flatnonzero(split.held_out)
    t0, S = split.test_start, split.support
    known = split.known(tasks.n_time)
    y = tasks.series.astype(float)
    i, o, h = 1, 5, 2  # second held-out region, origin t0 + 5, horizon 3
    r, origin = held[i], t0 + 5
    target = origin + h
    slot = target % 12
    own = [t for t in range(t0 - S, origin) if t % 12 == slot]
    expanding = y[r, own].mean()
    np.testing.assert_allclose(fc["expanding_climatology"].mean[i, o, h], expanding, rtol=1e-9)
    # neighbour climatology shifted by the mean offset of the region's known values; a
    # training neighbour is known before test_start, a held-out one from its support on
    known = known & ((np.arange(tasks.n_time)[None, :] < t0) | split.held_out[:, None])
    nb = _neighbours(tasks, r)
    nbk = [j for j in nb if known[j, :origin].any()]

    def nclim(p):
        return np.mean([y[j, [t for t in range(origin) if t % 12 == p and known[j, t]]].mean()
                        for j in nbk])  # fmt: skip

    ts = list(range(t0 - S, origin))
    offset = np.mean([y[r, t] - nclim(t % 12) for t in ts])
    np.testing.assert_allclose(
        fc["neighbour_climatology"].mean[i, o, h], nclim(slot) + offset, rtol=1e-9
    )
    k = fit.k
    eb = (y[r, own].sum() + k * (nclim(slot) + offset)) / (len(own) + k)
    np.testing.assert_allclose(fc["eb_climatology"].mean[i, o, h], eb, rtol=1e-9)
    # anomaly persistence: the last value's anomaly against the eb climatology at its slot
    last = origin - 1
    ls = last % 12
    own_l = [t for t in range(t0 - S, origin) if t % 12 == ls]
    eb_l = (y[r, own_l].sum() + k * (nclim(ls) + offset)) / (len(own_l) + k)
    expect = eb + fit.phi[h] * (y[r, last] - eb_l)  # lead h + 1 from the last value
    np.testing.assert_allclose(fc["anomaly_persistence"].mean[i, o, h], expect, rtol=1e-9)


def test_references_use_nothing_after_the_origin():
    tasks, split = _setup()
    base = {f.method: f for f in R.references(tasks, split, 3)}
    changed = dataclasses.replace(tasks, series=tasks.series.copy())
    o = 6
    changed.series[:, split.test_start + o :] += 100.0  # from origin o on
    after = {f.method: f for f in R.references(changed, split, 3)}
    for name in R.REFERENCES:
        np.testing.assert_allclose(after[name].mean[:, : o + 1], base[name].mean[:, : o + 1])


def test_eb_shrinkage_is_fitted_on_training_regions_only():
    tasks, split = _setup()
    fit = R.fit_references(tasks, split, 3)
    changed = dataclasses.replace(tasks, series=tasks.series.copy())
    changed.series[split.held_out] *= 3.0  # held-out values play no part in the fit
    fit2 = R.fit_references(changed, split, 3)
    assert fit.k == fit2.k
    np.testing.assert_allclose(fit.phi, fit2.phi)
    assert np.argmin(fit.k_mse) == list(R.K_GRID).index(fit.k)


def test_region_without_neighbours_falls_back_to_training_mean():
    tasks, split = _setup()
    r = int(np.flatnonzero(split.held_out)[0])
    ei = tasks.graph.data.edge_index
    keep = (ei[0] != r) & (ei[1] != r)
    data = tasks.graph.data.clone()
    data.edge_index = ei[:, keep]
    lonely = dataclasses.replace(tasks, graph=dataclasses.replace(tasks.graph, data=data))
    h, held = R.heldout_history(lonely, split, 3)
    i = list(held).index(r)
    assert h.no_neighbour[i] and h.no_neighbour.sum() == 1
    known = split.known(tasks.n_time)
    train = split.training
    o = h.origins[0]
    p = 4
    means = [tasks.series[j, [t for t in range(o) if t % 12 == p and known[j, t]]].mean()
             for j in np.flatnonzero(train)]  # fmt: skip
    np.testing.assert_allclose(h.nbr_clim[i, 0, p], np.mean(means), rtol=1e-6)


def test_short_support_warns_that_seasonal_slots_fall_back():
    tasks, split = _setup(support=6)
    with pytest.warns(UserWarning, match="support of 6 steps is shorter than one seasonal cycle"):
        fc = R.references(tasks, split, 3)
    assert all(np.isfinite(f.mean).all() and np.isfinite(f.std).all() for f in fc)


def test_calibration_scores_by_hand():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(3, 200, 2))
    mean, std = np.zeros_like(y), np.ones_like(y)
    s = scores(y, mean, std)
    inside = (np.abs(y) <= 1.6448536269514722).reshape(3, -1).mean(1)
    np.testing.assert_allclose(s["coverage_90"], inside)
    lo, hi = -1.6448536269514722, 1.6448536269514722
    by_hand = np.mean([(hi - lo) + 20 * max(lo - v, 0) + 20 * max(v - hi, 0) for v in y[1].ravel()])
    np.testing.assert_allclose(s["interval_score_90"][1], by_hand)
    assert interval_score(np.array(1.0), np.array(0.0), np.array(2.0), 0.1) == 2.0
    assert np.isnan(scores(y, mean, None)["coverage_90"]).all()


def test_low_rank_posterior_equals_dense_inverse():
    g = torch.Generator().manual_seed(0)
    r, o, p = 3, 4, 12
    s = torch.rand(r, 1, 1, generator=g, dtype=torch.float64) + 0.1
    u = torch.randn(r, p, 2, generator=g, dtype=torch.float64)
    d = torch.rand(r, o, p, generator=g, dtype=torch.float64) * 3
    d[0, 0] = 0.0  # nothing known yet: the prior itself
    post = _LowRankPosterior(s, u, d)
    sigma = s * torch.eye(p, dtype=torch.float64) + u @ u.transpose(-1, -2)  # (R, P, P)
    dense = torch.linalg.inv(torch.linalg.inv(sigma)[:, None] + torch.diag_embed(d))
    v = torch.randn(r, o, p, generator=g, dtype=torch.float64)
    torch.testing.assert_close(post.solve(v), (dense @ v[..., None])[..., 0])
    e = torch.randn(r, o, 3, p, generator=g, dtype=torch.float64)
    torch.testing.assert_close(post.quad(e), torch.einsum("rohp,ropq,rohq->roh", e, dense, e))
    torch.testing.assert_close(dense[0, 0], sigma[0])


@pytest.fixture(scope="module")
def hier():
    tasks, split = _setup(n_time=144)
    cfg = LearnConfig(learner="hier", episodes=60, val_every=10, patience=3, device="cpu")
    return tasks, split, cfg, HierarchicalLearner.train_on(tasks, split, cfg)


def test_hier_is_batched_equals_looped_and_permutation_invariant(hier):
    tasks, split, cfg, res = hier
    net = res.learner
    a = net.forecast_split(tasks, split, cfg)
    assert a.method == "meta" and np.isfinite(a.mean).all() and (a.std > 0).all()
    # node permutation: the same forecasts, permuted
    perm = np.random.default_rng(1).permutation(tasks.n_regions)
    inv = np.argsort(perm)
    data = tasks.graph.data.clone()
    data.x = data.x[perm]
    data.edge_index = torch.as_tensor(inv)[tasks.graph.data.edge_index]
    data.pos = data.pos[perm] if data.pos is not None else None
    g2 = dataclasses.replace(tasks.graph, data=data, region_ids=tasks.region_ids[perm])
    t2 = dataclasses.replace(
        tasks, series=tasks.series[perm], region_ids=tasks.region_ids[perm],
        covariates=tasks.covariates[perm], graph=g2,
        area_km2=None if tasks.area_km2 is None else tasks.area_km2[perm],
    )  # fmt: skip
    s2 = dataclasses.replace(split, held_out=split.held_out[perm], excluded=None)
    b = net.forecast_split(t2, s2, cfg)
    order = np.argsort(tasks.region_ids[a.regions])
    order2 = np.argsort(t2.region_ids[b.regions])
    np.testing.assert_allclose(b.mean[order2], a.mean[order], rtol=1e-5, atol=1e-6)


def test_hier_training_is_seeded_and_logged(hier, tmp_path):
    tasks, split, cfg, res = hier
    again = HierarchicalLearner.train_on(tasks, split, cfg, checkpoint_dir=tmp_path)
    assert [r["train_loss"] for r in again.history] == [r["train_loss"] for r in res.history]
    assert np.isfinite(res.initial_val_loss)  # the warm start is validated, a candidate
    assert {"model.pt", "history.json", "metrics.csv", "state.pt"} <= {
        p.name for p in tmp_path.iterdir()
    }


def test_hier_longer_support_moves_toward_own_record(hier):
    """A region whose level sits far from its neighbours': the longer its known record, the
    closer the forecast to its own seasonal means (and the further from the prior)."""
    tasks, split, cfg, res = hier
    r = int(np.flatnonzero(split.held_out)[0])
    moved = dataclasses.replace(tasks, series=tasks.series.copy())
    moved.series[r] += 5.0  # 10 noise SDs away from every neighbour
    own = {}
    for n in (6, 24, 72):
        sp = dataclasses.replace(split, support=n)
        f = res.learner.forecast_split(moved, sp, cfg)
        i = list(f.regions).index(r)
        truth = moved.series[r, f.origins[:, None] + np.arange(3)]
        own[n] = float(np.sqrt(np.nanmean((f.mean[i] - truth) ** 2)))
    assert own[72] < own[24] < own[6]


def test_hier_adaptation_helps_and_intervals_are_calibrated(hier):
    tasks, split, cfg, res = hier
    fc = [res.learner.forecast_split(tasks, split, cfg),
          res.learner.forecast_split(tasks, split, cfg, adapt=False)]  # fmt: skip
    fc += R.references(tasks, split, 3)
    t = evaluate(tasks, fc, reference="eb_climatology").table.set_index("method")
    assert t.loc["meta", "rmse"] < t.loc["meta_noadapt", "rmse"]
    assert 0.8 <= t.loc["meta", "coverage_90"] <= 0.98
    assert "crpss_vs_eb_climatology" in t.columns


def test_report_notes_name_lonely_regions_support_gaps_and_short_supports():
    tasks, split = _setup(support=6)
    held = np.flatnonzero(split.held_out)
    gap = dataclasses.replace(tasks, series=tasks.series.copy())
    t0 = split.test_start
    gap.series[held[0], t0 - 30 : t0 + 2] = np.nan  # longer than the 6-step support
    r = int(held[1])
    ei = tasks.graph.data.edge_index
    data = tasks.graph.data.clone()
    data.edge_index = ei[:, (ei[0] != r) & (ei[1] != r)]
    gap = dataclasses.replace(gap, graph=dataclasses.replace(tasks.graph, data=data))
    notes = " ".join(R.heldout_notes(gap, split, 3))
    assert f"No known neighbour: 1 held-out region(s) ({tasks.region_ids[r]})" in notes
    assert (
        f"Gap longer than the support: 1 held-out region(s) ({tasks.region_ids[held[0]]})" in notes
    )
    assert "Support of 6 steps is shorter than one seasonal cycle (12 steps)" in notes
    with pytest.warns(UserWarning, match="shorter than one seasonal cycle"):
        fc = R.references(gap, split, 3)
    i = 0  # the gap region is forecast from its neighbours until values arrive
    assert np.isfinite(fc[2].mean[i]).all()
    assert R.heldout_notes(*_setup(support=24), 3) == []


def test_the_longest_support_is_replayed_shortened_on_training_regions():
    tasks, split = _setup(support=96)  # every step before test_start: the shots curve's max
    regions, own, nbr, origins = R.pseudo_protocol(tasks, split, 3)
    # 22 test origins to replay; the support shortened to 96 - 2 - 22 = 72 steps
    assert origins.tolist() == list(range(72, 94)) and origins[-1] + 2 < split.test_start
    first_known = own[regions].argmax(axis=1)
    assert (origins[0] - first_known == 72).all()
    fc = R.references(tasks, split, 3)
    assert all(np.isfinite(f.mean).all() for f in fc)


def test_a_constant_record_leaves_skill_undefined_not_infinite():
    """Sea ice at the freezing point: climatology fits it exactly, so skill against it is
    undefined there (NaN), and the area-weighted table skips that region."""
    from spatialmeta.learn.baselines import climatology, ridge_ar

    tasks, split = _setup()
    r = int(np.flatnonzero(split.held_out)[0])
    flat = dataclasses.replace(tasks, series=tasks.series.copy())
    flat.series[r] = -1.8
    fc = [climatology(flat, split, 3), ridge_ar(flat, split, 3)] + R.references(flat, split, 3)
    ev = evaluate(flat, fc, method="eb_climatology")
    row = ev.by_region[
        (ev.by_region.method == "eb_climatology") & (ev.by_region.region_id == flat.region_ids[r])
    ]
    assert np.isnan(row["skill_vs_climatology"]).all()
    assert np.isfinite(ev.table[["rmse", "crps", "skill_vs_climatology"]].to_numpy()).all()


def test_hier_seed_ensemble_is_the_moment_matched_mixture_of_its_members(hier, tmp_path):
    tasks, split, cfg, res = hier
    assert cfg.members == 3 and len(res.learner.nets) == 3 and len(res.members) == 3
    mix = res.learner.forecast_split(tasks, split, cfg)
    one = dataclasses.replace(cfg, members=1)
    parts = [HierarchicalLearner(net).forecast_split(tasks, split, one) for net in res.learner.nets]
    mean = np.mean([p.mean for p in parts], axis=0)
    var = np.mean([p.std**2 for p in parts], axis=0) + np.var([p.mean for p in parts], axis=0)
    np.testing.assert_allclose(mix.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(mix.std, np.sqrt(var), rtol=1e-10)
    assert not np.allclose(parts[0].mean, parts[1].mean)  # the members differ (seeds)
    # member j is the single run with seed + 1000 j, checkpointed in its own folder
    alone = HierarchicalLearner.train_on(tasks, split, dataclasses.replace(one, seed=1000))
    for a, b in zip(alone.learner.state_dict().values(), res.learner.nets[1].state_dict().values(),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)
    HierarchicalLearner.train_on(tasks, split, cfg, checkpoint_dir=tmp_path)
    assert (tmp_path / "model.pt").exists() and (tmp_path / "member2" / "model.pt").exists()
    with pytest.raises(ValueError, match=r"`members` must be an integer >= 1"):
        HierarchicalLearner.train_on(tasks, split, dataclasses.replace(cfg, members=0))


@pytest.mark.parametrize("hidden, width", [(None, 16), (6, 6)])
def test_hier_prior_network_width_follows_the_config(hidden, width):
    """``LearnConfig.hidden`` sets the prior network's width (None: hier's own 16)."""
    tasks, split = _setup()
    cfg = LearnConfig(learner="hier", episodes=4, val_every=2, seed=0, device="cpu", members=1,
                      hidden=hidden)  # fmt: skip
    net = HierarchicalLearner.train_on(tasks, split, cfg).learner.net
    assert net.encode[0].out_features == width
    assert net.conv.out_channels == width


def test_weighted_quantile_equals_the_repeated_sample():
    from spatialmeta.learn.algorithms.hier import _weighted_quantile

    rng = np.random.default_rng(0)
    v = rng.normal(size=57)
    w = rng.integers(1, 5, size=57)
    for q in (0.1, 0.5, 0.9):
        got = float(
            _weighted_quantile(torch.as_tensor(v), torch.as_tensor(w, dtype=torch.float64), q)
        )
        assert got == np.quantile(np.repeat(v, w), q, method="inverted_cdf")


def test_calibration_covers_90_percent_of_the_area():
    """Two validation regions, one with 9 times the area and residuals twice as large: the
    variance factor is the 90 % quantile of the residuals with each region counted by its
    area (as area-weighted coverage scores it), wider than with regions counted equally."""
    from spatialmeta.learn.algorithms.hier import Z90, HierarchicalForecaster

    net = HierarchicalForecaster(21, 12, 1, hidden=4)
    rng = np.random.default_rng(1)
    z = torch.as_tensor(rng.normal(size=(2, 400, 1)) * np.array([2.0, 1.0])[:, None, None])
    mean, var, mask = torch.zeros_like(z), torch.ones_like(z), torch.ones_like(z)
    a = np.abs(z[..., 0].numpy())
    net.calibrate([(mean, var, z, mask)], [torch.tensor([9.0, 1.0])])
    weighted = np.quantile(np.concatenate([np.tile(a[0], 9), a[1]]), 0.9, method="inverted_cdf")
    assert float(net.var_scale[0]) == pytest.approx((weighted / Z90) ** 2, rel=1e-6)
    net.calibrate([(mean, var, z, mask)])  # equal weights
    equal = np.quantile(a.ravel(), 0.9, method="inverted_cdf")
    assert float(net.var_scale[0]) == pytest.approx((equal / Z90) ** 2, rel=1e-6)
    assert equal < 0.9 * weighted
