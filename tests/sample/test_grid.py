import numpy as np
import pytest
from PIL import Image

from edlib.sample import make_grid
from edlib.sample.grid import BACKGROUND, MAX_LABEL_LINES


def _noise_images(count, size=(24, 16), seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(count)]


def _pixels(image):
    return np.asarray(image.convert("RGB"))


def test_unlabelled_grid_is_about_square_and_each_cell_is_its_image():
    images = _noise_images(5)

    grid, layout = make_grid(images)

    assert (layout.rows, layout.cols) == (2, 3)
    assert grid.size == (3 * 24, 2 * 16)
    for index, image in enumerate(images):
        crop = grid.crop(layout.box(index // 3, index % 3))
        assert np.array_equal(_pixels(crop), _pixels(image)), index
    # The sixth cell has no image: background.
    assert (_pixels(grid.crop(layout.box(1, 2))) == BACKGROUND).all()


def test_labelled_grid_puts_labels_left_and_on_top_and_cells_after_them():
    images = _noise_images(4)
    rows, cols = ["step-000010", "step-000020"], ["a cat", "a dog on a beach"]

    grid, layout = make_grid(images, cols=2, row_labels=rows, col_labels=cols)

    assert layout.left > 0 and layout.top > 0
    # 24 px images are enlarged 8 times (to MIN_LABELLED_CELL), pixels kept square.
    assert layout.scale == 8 and (layout.cell_width, layout.cell_height) == (192, 128)
    assert grid.size == (layout.left + 2 * 192, layout.top + 2 * 128)
    for index, image in enumerate(images):
        crop = grid.crop(layout.box(index // 2, index % 2))
        assert np.array_equal(_pixels(crop), np.repeat(np.repeat(_pixels(image), 8, axis=0), 8, axis=1)), index
    # Text was drawn in both label bands (dark pixels on the white background).
    top_band = _pixels(grid.crop((layout.left, 0, grid.width, layout.top)))
    left_band = _pixels(grid.crop((0, layout.top, layout.left, grid.height)))
    assert (top_band < 128).any() and (left_band < 128).any()


def test_a_labelled_grid_of_small_images_has_room_for_its_prompts():
    """Issue 19: a toy model's 64 px samples made a 194x184 grid, its prompts cut by "..."."""
    prompt = "a zorblat on a red background, drawn large"
    _, small = make_grid(_noise_images(2, (64, 64)), cols=2, col_labels=[prompt, prompt])
    assert small.scale == 3 and small.cell_width == 192
    assert small.top <= 3 * (small.top - 2 * 4) // 2 + 2 * 4  # wrapped on at most 2 lines: nothing cut
    _, unlabelled = make_grid(_noise_images(2, (64, 64)), cols=2)
    assert unlabelled.scale == 1 and unlabelled.cell_width == 64  # sample sheets keep their size


def test_cells_are_as_large_as_the_largest_image():
    small, large = _noise_images(1, (16, 16))[0], _noise_images(1, (32, 24), seed=1)[0]

    grid, layout = make_grid([small, large], cols=2)

    assert (layout.cell_width, layout.cell_height) == (32, 24)
    assert grid.size == (64, 24)
    assert np.array_equal(_pixels(grid.crop((0, 0, 16, 16))), _pixels(small))
    assert np.array_equal(_pixels(grid.crop((32, 0, 64, 24))), _pixels(large))


def test_long_column_labels_are_wrapped_and_cut():
    images = _noise_images(1, (64, 64))
    long_prompt = "a very long prompt " * 30

    _, short_layout = make_grid(images, col_labels=["one line"])
    _, long_layout = make_grid(images, col_labels=[long_prompt])

    line_height = short_layout.top - 2 * 4  # the band of one line, less its padding
    assert long_layout.top == MAX_LABEL_LINES * line_height + 2 * 4


def test_label_counts_must_match_rows_and_columns():
    with pytest.raises(ValueError, match="1 column labels for 2 columns"):
        make_grid(_noise_images(2), cols=2, col_labels=["only one"])
    with pytest.raises(ValueError, match="3 row labels for 1 rows"):
        make_grid(_noise_images(2), cols=2, row_labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="no images"):
        make_grid([])
