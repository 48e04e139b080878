"""The demo's data root, as a spec for `write_data_root`: used by `edlib demo`, the
preservation lab and the notebooks' demo data (here, below both, so the widgets need not
import the demo)."""

NEW_CONCEPT = "zorblat"

# The new concept is a shape the base world never had ("zorblat", a crescent); "stars" is
# a concept with few images; "preservation" is ordinary world images, mixed in at 0.1 per
# epoch (20 of 200) so the model keeps what it knew.
DEMO_SPEC = {
    NEW_CONCEPT: {"count": 40, "shapes": [NEW_CONCEPT]},
    "stars": {"count": 10, "shapes": ["star"]},
    "preservation": {"count": 200, "multiply": "0.1"},
}
# Target shares for balancing: the two concepts equally, preservation a fifth of the epoch.
DEMO_WEIGHTS = {NEW_CONCEPT: 2, "stars": 2, "preservation": 1}
