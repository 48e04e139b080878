"""Image grids: all images of a sampling event at a glance, and labelled X/Y comparisons.

Every cell is as large as the largest image, and each image is pasted at its cell's top-left
corner, so a cell's crop is exactly that image. A labelled grid of small images (a toy model's
64 px samples) enlarges every image by a whole factor, pixels kept square (`MIN_LABELLED_CELL`),
so a prompt above its column has room to be read and the grid need not be blown up to be seen. Labels use PIL's default font: no font files to
ship or find, and it renders the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (0, 0, 0)
PADDING = 4  # pixels around label text
MAX_LABEL_LINES = 4  # longer column labels (long prompts) are cut with an ellipsis
MAX_ROW_LABEL_WIDTH = 512
MIN_FONT_SIZE = 10
CELL_WIDTH_PER_FONT_PIXEL = 24  # a 512 px cell gets a 21 px font
MIN_LABELLED_CELL = 192  # a labelled grid's cells are at least this wide (whole-factor enlargement)


@dataclass(frozen=True)
class GridLayout:
    """Where each cell of a grid lies: a label band on the left and on top, then the cells."""

    rows: int
    cols: int
    cell_width: int
    cell_height: int
    left: int = 0  # width of the row-label band
    top: int = 0  # height of the column-label band
    scale: int = 1  # each image is pasted enlarged this many times (nearest neighbour)

    @property
    def size(self) -> tuple[int, int]:
        return self.left + self.cols * self.cell_width, self.top + self.rows * self.cell_height

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """The (left, top, right, bottom) box of cell (row, col)."""
        x = self.left + col * self.cell_width
        y = self.top + row * self.cell_height
        return x, y, x + self.cell_width, y + self.cell_height


def _font(cell_width: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font, scaled with the cells so labels stay readable on 512 px images
    (Pillow's bitmap fallback, used without FreeType, has one size)."""
    try:
        return ImageFont.load_default(size=max(MIN_FONT_SIZE, cell_width // CELL_WIDTH_PER_FONT_PIXEL))
    except ImportError:
        return ImageFont.load_default()


def _line_height(font) -> int:
    left, top, right, bottom = font.getbbox("Ag")
    return bottom - top + 2


def _wrap(text: str, font, width: int) -> list[str]:
    """``text`` broken into lines no wider than ``width`` (at spaces where possible), at most
    `MAX_LABEL_LINES` lines, the last cut with an ellipsis when text was left over."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width or not line:
                line = candidate
            else:
                lines.append(line)
                line = word
            # A single word wider than the cell is cut by characters.
            while font.getlength(line) > width and len(line) > 1:
                cut = len(line)
                while cut > 1 and font.getlength(line[:cut]) > width:
                    cut -= 1
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    if len(lines) > MAX_LABEL_LINES:
        lines = lines[:MAX_LABEL_LINES]
        last = lines[-1]
        while last and font.getlength(last + "...") > width:
            last = last[:-1]
        lines[-1] = last + "..."
    return lines


def make_grid(
    images: Sequence[Image.Image],
    *,
    cols: int | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
) -> tuple[Image.Image, GridLayout]:
    """Lay ``images`` out row by row in a grid of ``cols`` columns (default: about square).

    ``row_labels``/``col_labels`` (one per row / column) are drawn in bands left of and above
    the cells; with labels, images narrower than `MIN_LABELLED_CELL` are enlarged by the
    whole factor that reaches it. Returns the grid and its layout (where each cell lies).
    """
    if not images:
        raise ValueError("make_grid: no images to lay out")
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"make_grid: {len(row_labels)} row labels for {rows} rows")
    if col_labels is not None and len(col_labels) != cols:
        raise ValueError(f"make_grid: {len(col_labels)} column labels for {cols} columns")

    scale = 1
    if row_labels or col_labels:
        scale = max(1, math.ceil(MIN_LABELLED_CELL / max(image.width for image in images)))
    if scale > 1:
        images = [image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST) for image in images]
    cell_width = max(image.width for image in images)
    cell_height = max(image.height for image in images)
    font = _font(cell_width)
    line_height = _line_height(font)

    wrapped_cols = [_wrap(label, font, cell_width - 2 * PADDING) for label in col_labels or []]
    top = max((len(lines) for lines in wrapped_cols), default=0) * line_height
    top = top + 2 * PADDING if col_labels else 0
    left = 0
    wrapped_rows: list[list[str]] = []
    if row_labels:
        longest = max(font.getlength(line) for label in row_labels for line in label.splitlines() or [""])
        left = min(int(math.ceil(longest)), MAX_ROW_LABEL_WIDTH) + 2 * PADDING
        wrapped_rows = [_wrap(label, font, left - 2 * PADDING) for label in row_labels]

    layout = GridLayout(rows, cols, cell_width, cell_height, left, top, scale)
    grid = Image.new("RGB", layout.size, BACKGROUND)
    for index, image in enumerate(images):
        x, y, _, _ = layout.box(index // cols, index % cols)
        grid.paste(image.convert("RGB"), (x, y))

    draw = ImageDraw.Draw(grid)
    for col, lines in enumerate(wrapped_cols):
        x, _, _, _ = layout.box(0, col)
        for n, line in enumerate(lines):
            draw.text((x + PADDING, PADDING + n * line_height), line, fill=TEXT_COLOUR, font=font)
    for row, lines in enumerate(wrapped_rows):
        _, y, _, _ = layout.box(row, 0)
        for n, line in enumerate(lines):
            draw.text((PADDING, y + PADDING + n * line_height), line, fill=TEXT_COLOUR, font=font)
    return grid, layout
