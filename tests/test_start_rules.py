"""Start rules (irstd.labels.start): when label updates begin, picked by name, resumable."""

import math

import pytest

from irstd.labels.start import START_RULES, AfterEpoch, AfterFraction, LossBelow, LossPlateau, build_start_rule


def first_firing(rule, losses, max_epochs=None):
    return next((epoch for epoch, loss in enumerate(losses) if rule.fires(epoch, loss, max_epochs)), None)


def test_loss_rule_fires_at_the_first_epoch_under_tloss():
    assert first_firing(LossBelow(10), [30, 20, 12, 9, 15]) == 3
    assert first_firing(LossBelow(0), [30, 1e-9]) is None  # 0: never


def test_epoch_and_fraction_rules_count_epochs():
    assert first_firing(AfterEpoch(3), [1.0] * 10) == 3
    assert first_firing(AfterFraction(0.2), [1.0] * 100, max_epochs=50) == 10
    with pytest.raises(ValueError, match="trainer.max_epochs"):
        AfterFraction(0.2).fires(0, 1.0, None)


def test_plateau_waits_for_the_loss_to_stop_falling_whatever_its_scale():
    falling = [100 * 0.7 ** epoch for epoch in range(12)]
    flat = [falling[-1] * (1 + 0.001 * (i % 2)) for i in range(15)]
    curve = falling + flat
    fired = {scale: first_firing(LossPlateau(window=5, min_drop=0.05, min_epochs=5), [scale * v for v in curve])
             for scale in (1e-3, 1.0, 1e3)}
    # the same curve at any loss scale fires at the same epoch, after the fall, within the window and smoothing lag
    assert len(set(fired.values())) == 1
    assert len(falling) <= fired[1.0] <= len(falling) + 10
    # a loss that keeps falling by 10 % an epoch never plateaus
    assert first_firing(LossPlateau(window=5, min_drop=0.05), [0.9 ** e for e in range(60)]) is None
    # NaN epochs (no batches) neither fire nor break the history
    rule = LossPlateau(window=2, min_epochs=2)
    assert not rule.fires(0, math.nan, None) and rule.smoothed == []


def test_plateau_state_round_trips_so_a_resumed_run_fires_at_the_same_epoch():
    losses = [10.0, 8.0, 7.0, 6.8, 6.7, 6.69, 6.68, 6.68, 6.68, 6.68]
    whole = first_firing(LossPlateau(window=3, min_epochs=3), losses)
    first = LossPlateau(window=3, min_epochs=3)
    assert first_firing(first, losses[:4]) is None
    resumed = LossPlateau(window=3, min_epochs=3)
    resumed.load_state_dict(first.state_dict())
    later = next(epoch for epoch in range(4, len(losses)) if resumed.fires(epoch, losses[epoch], None))
    assert later == whole


@pytest.mark.parametrize(("config", "key"), [({"name": "loss", "Tloss": -1}, "start.Tloss"),
                                             ({"name": "epoch", "Tepoch": -1}, "start.Tepoch"),
                                             ({"name": "fraction", "fraction": 1.5}, "start.fraction"),
                                             ({"name": "plateau", "min_drop": 0}, "start.min_drop"),
                                             ({"name": "soon"}, "start.name"),
                                             ({"name": "loss", "Tlos": 3}, "start.Tlos")])
def test_bad_start_settings_name_their_key(config, key):
    with pytest.raises((ValueError, TypeError), match=key.replace(".", r"\.")):
        build_start_rule(config)


def test_every_shipped_start_config_builds(tmp_path):
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from conftest import compose_config

    for name in START_RULES.names():
        cfg = compose_config("train", tmp_path, [f"start={name}"])
        assert build_start_rule(OmegaConf.to_container(cfg.start)).name == name
        GlobalHydra.instance().clear()


def test_keys_of_other_rules_are_left_out_so_experiments_compose_with_any_rule():
    # experiment=lesps_demo sets start.Tepoch; with start=loss that key belongs to another rule and is not passed on
    rule = build_start_rule({"name": "loss", "Tloss": 3.0, "Tepoch": 20})
    assert isinstance(rule, LossBelow) and rule.Tloss == 3.0
