"""Where the floor plan's labels go: a zone's name inside its zone (smaller, or on two lines,
when it is narrow), an id beside its marker on whichever side is free, and no label on
another label, on a marker or outside its panel.

Greedy and approximate on purpose: text widths are estimated from the character count
(DejaVu Sans, which both back ends use, averages 0.48-0.59 em per character for names and
ids), which is enough to keep labels apart on a shop plan without a font engine in the SVG
path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in picture pixels
CHAR_EM = 0.6
SMALLEST = 8  # px: below this a label is not worth printing smaller; it is shortened


@dataclass(frozen=True, slots=True)
class Label:
    x: float
    y: float  # baseline
    text: str
    size: int
    centred: bool


def text_width(text: str, size: float) -> float:
    return CHAR_EM * size * len(text)


def text_box(label: Label) -> Box:
    width = text_width(label.text, label.size)
    x0 = label.x - width / 2 if label.centred else label.x
    return (x0, label.y - 0.8 * label.size, x0 + width, label.y + 0.25 * label.size)


def overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def inside(inner: Box, outer: Box) -> bool:
    return (
        inner[0] >= outer[0]
        and inner[1] >= outer[1]
        and inner[2] <= outer[2]
        and inner[3] <= outer[3]
    )


def _lines(text: str, width: float, size: int) -> list[str] | None:
    """`text` on one line, or two split at a space, within `width`; None if it does not fit."""
    if text_width(text, size) <= width:
        return [text]
    words = text.split(" ")
    best: list[str] | None = None
    for cut in range(1, len(words)):
        pair = [" ".join(words[:cut]), " ".join(words[cut:])]
        longest = max(text_width(p, size) for p in pair)
        if longest <= width and (best is None or longest < max(text_width(p, size) for p in best)):
            best = pair
    return best


def _shortened(text: str, width: float, size: int) -> str:
    keep = max(1, int(width / (CHAR_EM * size)) - 1)
    return text if len(text) <= keep else text[:keep] + "…"


@dataclass(slots=True)
class Layout:
    """The labels of one panel, placed one by one around what is already taken."""

    area: Box
    taken: list[Box] = field(default_factory=list)

    def block(self, box: Box) -> None:
        self.taken.append(box)

    def free(self, box: Box) -> bool:
        return inside(box, self.area) and not any(overlaps(box, t) for t in self.taken)

    def zone(
        self,
        name: str,
        zone: Box,
        anchor: tuple[float, float],
        size: int = 11,
        avoid: tuple[Box, ...] = (),
    ) -> list[Label]:
        """The zone's name inside `zone`, at `anchor` or moved to a free place nearby that
        covers none of `avoid` (the zones drawn inside this one)."""
        width = zone[2] - zone[0] - 4
        lines: list[str] | None = None
        for candidate in range(size, SMALLEST - 1, -1):
            lines = _lines(name, width, candidate)
            if lines is not None:
                size = candidate
                break
        if lines is None:
            size = SMALLEST
            lines = [_shortened(name, width, size)]
        step = size * 1.2
        across = max(text_width(line, size) for line in lines) + 8
        x, y = anchor
        first: list[Label] = []
        shifts = [(dx, dy) for dx in (0, 1, -1, 2, -2, 3, -3) for dy in (0, 1, -1, 2, -2, 3, -3)]
        for dx, dy in sorted(shifts, key=lambda d: abs(d[0]) + abs(d[1])):
            cx, cy = x + dx * across, y + dy * step
            labels = [
                Label(cx, cy + (i - (len(lines) - 1) / 2) * step + 0.35 * size, line, size, True)
                for i, line in enumerate(lines)
            ]
            boxes = [text_box(label) for label in labels]
            if not first:
                first = labels
            if all(
                inside(b, zone) and self.free(b) and not any(overlaps(b, a) for a in avoid)
                for b in boxes
            ):
                for b in boxes:
                    self.block(b)
                return labels
        for label in first:  # nowhere free: where it belongs, overlapping as little as it can
            self.block(text_box(label))
        return first

    def beside(self, text: str, x: float, y: float, size: int = 10) -> Label:
        """An id next to its marker at (x, y): right, left, above or below, whichever is free."""
        width = text_width(text, size)
        spots = [
            (x + 7, y - 7),
            (x + 8, y + 14),
            (x - 7 - width, y - 7),
            (x - 8 - width, y + 14),
            (x - width / 2, y - 10),
            (x - width / 2, y + 19),
        ]
        labels = [Label(sx, sy, text, size, False) for sx, sy in spots]
        chosen = next((label for label in labels if self.free(text_box(label))), None)
        if chosen is None:
            chosen = next(
                (label for label in labels if inside(text_box(label), self.area)), labels[0]
            )
        self.block(text_box(chosen))
        return chosen
