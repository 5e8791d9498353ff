"""The speed-ups keep results exact: memoized pricing, cached leaves, lazy networkx, batched trial writes.

Correctness only; the speeds themselves are printed by benchmarks/cost_model.py and benchmarks/search.py.
"""

from __future__ import annotations

import copy
import random
import sys
from pathlib import Path

import pytest
import yaml

import planner
from planner.cost import estimate
from planner.ir import from_dict
from planner.ir.graph import EncoderGraph, compression_id, node_key
from planner.ir.spec import dump_spec

ROOT = Path(__file__).resolve().parent.parent
ARMHUBERT = ROOT / "studies/recycle-and-distill/armhubert-s.yaml"
_est = sys.modules["planner.cost.estimate"]


def _variants(n: int, seed: int = 0) -> list[dict]:
    base = yaml.safe_load(ARMHUBERT.read_text())
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        d = copy.deepcopy(base)
        d["layers"][0]["ffn"] = rng.choice([816, 1632])
        d["layers"][0]["heads"] = rng.choice([12, 6])
        d["reuse"] = rng.choice(["none", "2by6", "4by3"])
        bits = rng.choice([None, 8, 4])
        if bits:
            d["compression"] = [{"layers": "0-5", "modules": ["attention", "ffn"], "weight": f"int{bits}"},
                                {"layers": "6-11", "modules": ["ffn"], "sparsity": "2:4"}]  # fmt: skip
        out.append(d)
    return out


def _cold(graph: EncoderGraph, **kw) -> object:
    """The cost with every memo of the cost model empty (what the first pricing ever computes)."""
    saved = [(m, dict(m)) for m in (_est._MEMO, _est._INTERN, _est._WIRING, _est._LENGTHS)]
    try:
        for m, _ in saved:
            m.clear()
        plain = EncoderGraph(graph.spec, graph.nodes(), dict(graph.compression))  # no keys from build_graph
        return estimate(plain, **kw)
    finally:
        for m, old in saved:
            m.clear()
            m.update(old)


def test_memoized_pricing_equals_cold_pricing():
    graphs = [from_dict(d) for d in _variants(24)]
    for g in graphs:
        for kw in ({"samples": 16000}, {"samples": [8000, 23456]}, {"seconds": 2.0, "hardware": "a100"}):
            warm = estimate(g, **kw)
            assert warm == _cold(g, **kw)  # exact: the same integer formulas
            assert estimate(from_dict(dump_spec(g.spec)), **kw) == warm  # a new graph object


def test_memo_caps_drop_entries_without_changing_results(monkeypatch):
    monkeypatch.setattr(_est, "_CAP", 8)
    graphs = [from_dict(d) for d in _variants(6, seed=1)]
    first = [estimate(g, samples=s) for g in graphs for s in (16000, 32000, 17777)]
    _est._trim(_est._MEMO, 8)
    _est._trim(_est._INTERN, 8)
    assert len(_est._MEMO) <= 8 and len(_est._INTERN) <= 8
    assert [estimate(g, samples=s) for g in graphs for s in (16000, 32000, 17777)] == first
    assert [estimate(from_dict(dump_spec(g.spec)), samples=s) for g in graphs
            for s in (16000, 32000, 17777)] == first  # fmt: skip


def test_global_memos_stay_bounded():
    _est._trim(_est._MEMO)
    assert len(_est._MEMO) <= _est._CAP
    g = from_dict(_variants(1)[0])
    for s in range(16000, 16000 + 5000):
        estimate(g, samples=s, layers=False)
    assert len(_est._plan(g).lengths) <= 4096


def test_node_keys_name_config_and_context():
    a, b = (from_dict(d) for d in _variants(2, seed=3))
    for g in (a, b):
        assert g._node_keys == [node_key(n) for n in g.nodes()]
    for na, nb in zip(a.nodes(), b.nodes()):
        assert (node_key(na) == node_key(nb)) == (na.config == nb.config and na.context == nb.context)


def test_cached_leaves_equal_fresh_leaves():
    for d in _variants(8, seed=4):
        for n in from_dict(d).nodes():
            assert n.leaves == tuple(n.config.leaves(n.context))


def test_lazy_networkx_graph():
    g = planner.load(ARMHUBERT)
    assert "nx" not in vars(g)  # not built until read
    assert g.node("layers.3") is g.nodes("layers")[3]
    types = {d["type"] for _, _, d in g.nx.edges(data=True)}
    assert types == {"data", "attention_map", "head"}
    assert g.nx.nodes["layers.3"]["node"] is g.node("layers.3")
    with pytest.raises(KeyError):
        g.node("layers.99")


def test_compression_resolution_per_node_matches_flat():
    for d in _variants(8, seed=5):
        g = from_dict(d)
        flat = {f"{name}.{leaf}": c for name, comps in g._node_compression.items() for leaf, c in comps.items()}
        assert flat == g.compression
        sigs = {name: tuple((leaf, compression_id(c)) for leaf, c in comps.items())
                for name, comps in g._node_compression.items()}  # fmt: skip
        assert sigs == g._node_signatures
        assert all(not c.is_identity for c in g.compression.values())


def test_conv_layer_shorthand_is_not_shared_between_parses():
    a = from_dict(yaml.safe_load(ARMHUBERT.read_text()))
    b = from_dict(yaml.safe_load(ARMHUBERT.read_text()))
    assert a.spec.frontend[0].node.conv_layers == b.spec.frontend[0].node.conv_layers
    assert a.spec.frontend[0].node.conv_layers[2] == (256, 3, 2)


def test_stored_architecture_converts_to_the_architecture_file():
    from planner.search._optuna import architecture_text, architecture_yaml

    for d in _variants(6, seed=6):
        g = from_dict(d)
        text = architecture_yaml(architecture_text(g))
        assert text == planner.dumps(g)  # byte for byte what planner.dump writes
        assert planner.loads(text) == g
    old = planner.dumps(g)
    assert architecture_yaml(old) == old  # YAML stored by earlier planners passes through


def test_batched_trial_writes_equal_public_calls(tmp_path):
    optuna = pytest.importorskip("optuna")
    from planner.search._optuna import _record, _set_constraints, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    attrs = {"architecture": "{}", "cost": {"params": 3, "latency_s": None}, "feasible": False}
    keys, values = ["invalid", "budget.params"], [0.0, 0.5]

    def run(url: str, batched: bool) -> optuna.trial.FrozenTrial:
        study = optuna.create_study(storage=open_storage(url), directions=["minimize", "maximize"])

        def objective(trial: optuna.Trial) -> list[float]:
            trial.suggest_int("x", 0, 3)
            if batched:
                _record(trial, attrs, (keys, values))
                _record(trial, {"quality": {"q": 1.0}})
                assert trial.user_attrs["constraints"] == values and trial.user_attrs["quality"] == {"q": 1.0}
            else:
                _set_constraints(trial, keys, values)
                for k, v in {**attrs, "quality": {"q": 1.0}}.items():
                    trial.set_user_attr(k, v)
            return [1.0, 2.0]

        study.optimize(objective, n_trials=1)
        return study.trials[0]

    for kind, url in (("sqlite", f"sqlite:///{tmp_path / 'a.db'}"), ("journal", str(tmp_path / "a.journal"))):
        ours = run(url, True)
        ref = run(url.replace("a.", "b."), False)
        assert ours.user_attrs == ref.user_attrs, kind
        assert ours.system_attrs == ref.system_attrs, kind
        assert ours.state == ref.state
        assert ours.constraints == ref.constraints == dict(zip(keys, values))


def test_pickled_graph_drops_process_local_keys():
    import pickle

    g = from_dict(_variants(1, seed=7)[0])
    h = pickle.loads(pickle.dumps(g))
    assert h._node_keys is None and h._node_signatures is None and h == g
    assert estimate(h, samples=16000) == estimate(g, samples=16000)
