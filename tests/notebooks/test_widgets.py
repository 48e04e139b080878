"""The notebook panels driven from Python: set widget values, click buttons, and check the
numbers against edlib.data.preview / edlib.data.preservation and the files written on disk."""

from fractions import Fraction

import pytest

from edlib.data.balance import plan_balance
from edlib.data.numbers import format_count, format_share
from edlib.data.preservation import coverage, expected_mix, mix_per_epoch, preservation_multiplier
from edlib.data.preview import preview
from edlib.data.scan import scan
from edlib.data.schedule import EpochPlanner
from edlib.widgets import BalancePanel, DatasetPanel, PreservationPanel, share_figure, weight_nodes, write_multipliers
from edlib.widgets.common import with_multipliers
from edlib.world import write_data_root

SPEC = {
    "concept": {"count": 8, "shapes": ["star"]},
    "style/ink": {"count": 4, "multiply": "2"},
    "style": {"count": 3},
    "preservation": {"count": 40, "multiply": "0.1"},
}


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "data"
    write_data_root(root, SPEC, seed=2, size=64)
    return root


def _folder(p, path):
    return next(f for f in p.folders if f.path == path)


def test_dataset_panel_shows_the_preview(root):
    panel = DatasetPanel(root, batch_size=2, resolution=64)
    expected = preview(scan(root), batch_size=2, resolution=64)
    assert set(panel.rows) == {"concept", "preservation", "style", "style/ink"}
    for f in expected.folders:
        row = panel.rows[f.path]
        assert Fraction(row.multiply.value) == f.multiply
        assert f">{format_count(f.expected_per_epoch)}<" in row.per_epoch.value
        assert f">{format_share(f.share)}<" in row.share.value
    assert f"<b>{expected.steps_per_epoch}</b> steps per epoch" in panel.summary.value
    # a few thumbnails per folder: the grid's last cell of each row holds PNG Image widgets
    thumbs = panel.table.children[-1].children
    assert len(thumbs) == 4 and all(bytes(t.value).startswith(b"\x89PNG") for t in thumbs)


def test_editing_a_multiplier_updates_the_preview_and_save_writes_it(root):
    panel = DatasetPanel(root, batch_size=3, resolution=64)
    assert panel.save_button.disabled  # nothing edited yet
    panel.rows["concept"].multiply.value = "2.5"
    assert not (root / "concept" / "multiply.txt").exists()  # editing writes nothing

    # What the preview says must equal the library's preview of the edited data root.
    (root / "concept" / "multiply.txt").write_text("2.5\n")
    truth = preview(scan(root), batch_size=3, resolution=64)
    (root / "concept" / "multiply.txt").unlink()
    assert panel.preview.epoch_size == truth.epoch_size == Fraction(8 * 5, 2) + 4 * 2 + 3 + 4
    assert panel.preview.steps_per_epoch == truth.steps_per_epoch
    assert f"<b>{truth.steps_per_epoch}</b> steps per epoch" in panel.summary.value
    assert "<b>20</b>" in panel.rows["concept"].per_epoch.value

    panel.batch_size.value = 5
    edited = with_multipliers(scan(root), {"concept": Fraction(5, 2)})
    steps = preview(edited, batch_size=5, resolution=64).steps_per_epoch
    assert panel.preview.steps_per_epoch == steps
    assert f"<b>{steps}</b> steps per epoch at batch size 5" in panel.summary.value

    assert not panel.save_button.disabled
    panel.save_button.click()
    assert (root / "concept" / "multiply.txt").read_text(encoding="utf-8") == "2.5\n"
    assert "wrote concept/multiply.txt = 2.5" in panel.status.value
    assert scan(root).folder("concept").settings.multiply == Fraction(5, 2)
    assert panel.rows["concept"].multiply.value == "2.5" and panel.save_button.disabled  # rescanned

    panel.undo_button.click()
    assert not (root / "concept" / "multiply.txt").exists()
    assert panel.rows["concept"].multiply.value == "1"


def test_the_resolution_field_replans_and_refuses_what_buckets_cannot_use(root):
    panel = DatasetPanel(root, batch_size=2, resolution=64)
    assert "(resolution 64)" in panel.summary.value  # the demo's 64 px images, not 512
    panel.resolution_field.value = 128
    assert panel.preview.buckets == preview(scan(root), batch_size=2, resolution=128).buckets
    assert "(resolution 128)" in panel.summary.value and not panel.resolution_field.layout.border
    panel.resolution_field.value = 100
    assert "resolution 100: must be a multiple of 64" in panel.status.value and panel.resolution_field.layout.border
    assert panel.save_button.disabled
    panel.resolution_field.value = 64
    assert not panel.resolution_field.layout.border and "(resolution 64)" in panel.summary.value


def test_undo_restores_a_replaced_file(root):
    panel = DatasetPanel(root, resolution=64)
    panel.rows["preservation"].multiply.value = "0.25"
    panel.save_button.click()
    assert (root / "preservation" / "multiply.txt").read_text() == "0.25\n"
    panel.undo_button.click()
    assert (root / "preservation" / "multiply.txt").read_text() == "0.1\n"
    panel.undo_button.click()  # nothing left to undo: a clear message, no exception
    assert "no balance history to undo" in panel.status.value


def test_a_bad_value_is_flagged_and_cannot_be_saved(root):
    panel = DatasetPanel(root, resolution=64)
    panel.rows["style"].multiply.value = "0,5"
    assert panel.save_button.disabled
    assert "style/multiply.txt" in panel.status.value and "decimal separator" in panel.status.value
    assert panel.rows["style"].multiply.layout.border
    panel.save()
    assert not (root / "style" / "multiply.txt").exists()
    panel.rows["style"].multiply.value = "0.5"
    assert not panel.save_button.disabled and not panel.rows["style"].multiply.layout.border


def test_scan_warnings_are_shown(root):
    (root / "concept" / "multiply.txt.txt").write_text("2")
    panel = DatasetPanel(root, resolution=64)
    assert "multiply.txt.txt" in panel.messages.value and "did you mean multiply.txt" in panel.messages.value


def test_write_multipliers_checks_every_value_first(root):
    result = scan(root)
    with pytest.raises(ValueError, match="concept/multiply.txt: multiply must be > 0"):
        write_multipliers(result, {"style": "2", "concept": "0"})
    assert not (root / "style" / "multiply.txt").exists()


def test_write_multipliers_refuses_an_excluded_folder_whose_local_yaml_sets_multiply(root):
    # Writing removes its exclude.txt, and then local.yaml's multiply would win over the value written.
    (root / "concept" / "local.yaml").write_text("multiply: 3\n")
    (root / "concept" / "exclude.txt").write_text("")
    with pytest.raises(ValueError, match="concept/local.yaml sets multiply, which wins over multiply.txt"):
        write_multipliers(scan(root), {"concept": "2"})
    assert (root / "concept" / "exclude.txt").exists() and not (root / "concept" / "multiply.txt").exists()


def test_balance_panel_plans_applies_and_undoes(root):
    changes = []
    panel = BalancePanel(root, weights={"style": 2, "preservation": 1}, on_change=lambda: changes.append(1))
    assert weight_nodes(panel.scan) == ["concept", "preservation", "style", "style/.", "style/ink"]
    truth = plan_balance(scan(root), {"style": 2, "preservation": 1})
    assert [e.text for e in panel.plan.entries] == [e.text for e in truth.entries]
    panel.weights["concept"].value = 3
    truth = plan_balance(scan(root), {"style": 2, "preservation": 1, "concept": 3})
    assert [e.text for e in panel.plan.entries] == [e.text for e in truth.entries]

    fig = share_figure(panel.plan)
    sun = fig.data[0]
    leaves = dict(zip(sun.ids, sun.values))
    assert leaves["style/."] == pytest.approx(float(truth.entries[2].share))
    assert sum(sun.values) == pytest.approx(1.0)

    panel.apply_button.click()
    for e in truth.entries:
        assert (root / e.path / "multiply.txt").read_text() == e.text + "\n"
    assert changes == [1]
    panel.undo_button.click()
    assert not (root / "concept" / "multiply.txt").exists()
    assert (root / "preservation" / "multiply.txt").read_text() == "0.1\n"
    assert changes == [1, 1]


def test_a_save_in_the_table_replans_the_balance(root):
    balance = BalancePanel(root)
    table = DatasetPanel(root, resolution=64, on_change=balance.refresh)
    assert balance.plan.entries[0].current == 1  # concept
    table.rows["concept"].multiply.value = "4"
    table.save_button.click()
    assert balance.plan.entries[0].current == 4
    assert balance.plan.epoch_size == plan_balance(scan(root), {}).epoch_size


def test_balance_panel_applies_an_exclusion_as_exclude_txt_and_keeps_it_when_reopened(root):
    panel = BalancePanel(root)
    panel.weights["concept"].value = 0
    assert not panel.apply_button.disabled and panel.plan.excluded == ["concept"]
    panel.apply_button.click()
    assert (root / "concept" / "exclude.txt").is_file() and "exclude.txt in 1 excluded folder" in panel.status.value
    assert BalancePanel(root).weights["concept"].value == 0  # reopened: still excluded unless changed
    panel.undo_button.click()
    assert not (root / "concept" / "exclude.txt").exists()


def test_preservation_multiplier_modes(root):
    result = scan(root)
    assert preservation_multiplier(result, "preservation", per_epoch=6) == "0.15"
    assert preservation_multiplier(result, "preservation", fraction=0.05) == "0.05"
    # others: 8 + 2*4 + 3 = 19; share 0.5 -> 19 preservation samples of 40 images
    text = preservation_multiplier(result, "preservation", share=0.5)
    assert text == "0.475" and expected_mix(result, "preservation", text).share == pytest.approx(0.5)
    with pytest.raises(ValueError, match="exactly one"):
        preservation_multiplier(result, "preservation", per_epoch=3, fraction=0.1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        preservation_multiplier(result, "preservation", share=1)


def test_mix_and_coverage_come_from_the_real_draws(root):
    result = scan(root)
    mix = mix_per_epoch(result, "preservation", "0.125", epochs=3, seed=7)
    col = mix.folders.index("preservation")
    assert mix.samples[:, col].tolist() == [5, 5, 5]  # 0.125 x 40 = exactly 5 each epoch
    assert mix.samples[:, mix.folders.index("style/ink")].tolist() == [8, 8, 8]

    cov = coverage(result, "preservation", "0.125", seed=7)
    assert cov.epochs_to_all is not None and cov.seen[-1] == 1.0 and cov.seen[-2] < 1.0
    # The same images as the full run's schedules: replay them over the whole scan.
    (root / "preservation" / "multiply.txt").write_text("0.125\n")
    full = scan(root)
    planner = EpochPlanner(full, resolution=64, seed=7)
    paths = [it.path for it in full.items]
    shown = set()
    for epoch in range(cov.epochs_to_all):
        items = planner.realise(epoch, batch_size=1).items
        shown |= {paths[i] for i in items if paths[i].startswith("preservation/")}
        assert len(shown) / 40 == cov.seen[epoch]
    assert len(shown) == 40
    assert cov.expected[0] == pytest.approx(0.125) and cov.expected[1] == pytest.approx(1 - 0.875**2)


def test_preservation_panel(root):
    panel = PreservationPanel(root, seed=3, epochs_shown=4)
    assert panel.folder.value == "preservation"
    assert panel.mode.value == "fraction" and panel.amount.value == pytest.approx(0.1)
    panel.mode.value = "per_epoch"
    assert panel.amount.value == pytest.approx(4) and panel.text == "0.1"  # switching modes keeps the mix
    panel.amount.value = 10
    assert panel.text == "0.25"
    assert panel.coverage.epochs_to_all == coverage(scan(root), "preservation", "0.25", seed=3).epochs_to_all
    assert panel.mix.samples.shape == (4, 4)
    assert "<b style='font-size:1.15em'>0.25</b>" in panel.result.value

    panel.save_button.click()
    assert (root / "preservation" / "multiply.txt").read_text() == "0.25\n"
    panel.undo_button.click()
    assert (root / "preservation" / "multiply.txt").read_text() == "0.1\n"

    panel.mode.value = "share"
    panel.amount.value = 1.5
    assert panel.text is None and panel.save_button.disabled and "between 0 and 1" in panel.result.value


def test_panels_use_only_layout_keys_ipywidgets_knows(root, tmp_path, recwarn):
    """An unknown layout key (CSS `gap` is not one) is dropped, with only a warning, in every
    front end: the panel would look different from what its code says."""
    from edlib.widgets import TrainingPanel

    DatasetPanel(root)
    BalancePanel(root)
    PreservationPanel(root)
    TrainingPanel(root, "some/model", tmp_path / "run")
    assert not [str(w.message) for w in recwarn if "unrecognized arguments" in str(w.message)]
