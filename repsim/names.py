"""The xarray schema of DESIGN.md: every dimension, coordinate and result name, in one place.

Every module and test addresses data by these names, never by string literals, so that a
name changes here or nowhere::

    rdm         (run, layer, stimulus, stimulus_)
    diag_l2     (run, layer)
    probe_accuracy, probe_mse   (run, layer, split)
    weight_norm (run, layer)
    activations (stimulus, unit), with coordinates label and index on stimulus
"""

from __future__ import annotations

__all__ = [
    "EPOCH",
    "INDEX",
    "LABEL",
    "LAYER",
    "RUN",
    "SG_LAYERS",
    "SPLIT",
    "SPLITS",
    "STIMULUS",
    "STIMULUS_",
    "UNIT",
]

#: Dimensions.
RUN, LAYER, STIMULUS, UNIT, SPLIT = "run", "layer", "stimulus", "unit", "split"
#: The second stimulus axis of an RDM (its coordinates end in ``_`` too: ``label_``).
STIMULUS_ = STIMULUS + "_"
#: Coordinates of a stimulus: its class, and its position in the source dataset split.
LABEL, INDEX = "label", "index"
#: Dimension of a training history (``history.csv``'s rows).
EPOCH = "epoch"
#: The values of :data:`SPLIT`: fitted on, and held out.
SPLITS: tuple[str, ...] = ("train", "test")
#: Result attribute: run → the layers after which a synthetic gradient sits (plots mark them).
SG_LAYERS = "sg_layers"
