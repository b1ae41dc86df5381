"""Product image edits behind one interface (:class:`genservice.edits.base.Edit`): each op is
a module with a class whose ``apply(image, mask=None, **params)`` returns an
:class:`~genservice.edits.base.EditResult` (image, mask used, op, params, timings, PNG
metadata). Pure numpy / PIL / scikit-image; torch only through ``restore``.

An edit is not held to the hero's bit-exact product rule; its own rule is that pixels outside
the mask never change (bit-exact) and the soft edge stays where it was.

Ops (:data:`EDITS`): ``recolor``, ``material``, ``background``, ``restore``, ``adjust``,
``remove-background``. ``recolor`` and ``material`` take ``part=`` (a part of the product:
``genservice.edits.parts``); ``background`` is a studio colour, or with ``prompt=`` /
``terms=`` and ``generator=`` a scene generated the hero's way (``genservice.edits.scene``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from genservice.edits.adjust import Adjust
from genservice.edits.background import Background, RemoveBackground
from genservice.edits.base import Edit, EditResult
from genservice.edits.material import Material
from genservice.edits.recolor import Recolor
from genservice.edits.restore import Restore

#: The registry: op name -> edit.
EDITS: dict[str, Edit] = {
    e.name: e
    for e in (Recolor(), Material(), Background(), Restore(), Adjust(), RemoveBackground())
}


def get_edit(op: str) -> Edit:
    """The edit registered as ``op``; a ValueError lists the ops that exist."""
    try:
        return EDITS[op]
    except KeyError:
        raise ValueError(f"op: expected one of {sorted(EDITS)}, got {op!r}") from None


def apply_edit(
    op: str, image: Image.Image, *, mask: np.ndarray | Image.Image | None = None, **params: Any
) -> EditResult:
    """Run edit ``op`` on ``image`` with ``params`` (see each op's ``apply``)."""
    return get_edit(op).apply(image, mask=mask, **params)


__all__ = ["EDITS", "Edit", "EditResult", "apply_edit", "get_edit"]
