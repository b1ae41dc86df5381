"""Request and response models of product edits (``/v1/edits``) and shopper customisation
(``/v1/customize``). Every text and number is bounded, so out-of-bound input is a 422
before any work is done."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.schemas import NO_CONTROLS_NONEMPTY, DbId, PlacementName, ShortId, UserId
from data.models import JobStatus

EditOp = Literal["recolor", "material", "background", "restore", "adjust", "remove-background"]
#: A colour: ``#rrggbb`` / ``#rgb`` or a name (checked by the service: 422 when unknown).
Colour = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=NO_CONTROLS_NONEMPTY)
]
#: A texture name (``genservice.edits.material.TEXTURE_NAMES``; files are CLI-only).
TextureName = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_-]*$")
]
#: A part of the product (``genservice.edits.parts``; checked by the op: 422 when unknown).
MaskPart = Annotated[
    str, StringConstraints(min_length=1, max_length=48, pattern=r"^[A-Za-z#0-9:._-]+$")
]
#: A scene prompt: comma-separated scene words (sanitised like every prompt text).
ScenePrompt = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=NO_CONTROLS_NONEMPTY)
]
OptionValue = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=NO_CONTROLS_NONEMPTY)
]
MAX_OPTIONS = 24


class EditParams(BaseModel):
    """The op's parameters; each op reads its own (see ``tailorshot edit --help``)."""

    model_config = ConfigDict(extra="forbid")

    colour: Colour | None = Field(default=None, description="recolor: hex or colour name.")
    texture: TextureName | None = Field(default=None, description="material: texture name.")
    texture_scale: float = Field(default=1.0, ge=0.05, le=20.0, description="material: tile.")
    seed: int = Field(
        default=0, ge=0, le=2**31 - 1, description="material: noise seed; background: scene seed."
    )
    mask_part: MaskPart | None = Field(
        default=None,
        description="recolor / material: only a part of the product: colour:COLOUR[:DE], "
        "dominant, secondary, top|bottom|left|right[:F], sole, upper.",
    )
    studio: Colour | None = Field(default=None, description="background: backdrop colour.")
    prompt: ScenePrompt | None = Field(
        default=None, description='background: a generated scene from text ("beach, sunset").'
    )
    user_id: UserId | None = Field(
        default=None,
        description="background: a generated scene from this shopper's taste profile (its "
        "approved style terms; the id is not stored with the edit).",
    )
    gradient: float = Field(default=0.0, ge=0.0, le=40.0, description="background: CIELAB L.")
    shadow: float = Field(default=0.35, ge=0.0, le=1.0, description="background: shadow.")
    scale: Literal[2, 4] = Field(default=4, description="restore: 2 or 4.")
    denoise: bool = False
    brightness: float = Field(default=1.0, ge=0.0, le=4.0)
    contrast: float = Field(default=1.0, ge=0.0, le=4.0)
    saturation: float = Field(default=1.0, ge=0.0, le=4.0)
    sharpness: float = Field(default=0.0, ge=0.0, le=4.0)
    auto_exposure: bool = False


class EditCreate(BaseModel):
    """An edit of a catalog product's image."""

    model_config = ConfigDict(extra="forbid")

    product_id: DbId
    op: EditOp
    params: EditParams = Field(default_factory=EditParams)


class EditPublic(BaseModel):
    """An edit job: status, progress (steps of ``progress_total``), the source image and,
    once it succeeded, the edited image."""

    id: str
    status: JobStatus
    product_id: int | None
    ops: list[str]
    params: list[dict[str, object]]
    progress_step: int
    progress_total: int
    error: str | None
    source_url: str | None
    image_url: str | None
    created_at: datetime
    finished_at: datetime | None


class EditSave(BaseModel):
    """Save a succeeded edit as a draft variant of its product (approve it like any other)."""

    model_config = ConfigDict(extra="forbid")

    placement: PlacementName = "banner"
    segment_id: DbId | None = None


class CustomizeChoices(BaseModel):
    """The shopper's choices; at least one."""

    model_config = ConfigDict(extra="forbid")

    colour: OptionValue | None = None
    material: OptionValue | None = None
    background: OptionValue | None = None

    @model_validator(mode="after")
    def _one(self) -> CustomizeChoices:
        if self.colour is None and self.material is None and self.background is None:
            raise ValueError("choose at least one of colour, material, background")
        return self


class CustomizeCreate(BaseModel):
    """A shopper customises a product (or a product variant, by SKU)."""

    model_config = ConfigDict(extra="forbid")

    user_id: UserId
    sku: ShortId
    choices: CustomizeChoices


class CustomizePublic(BaseModel):
    """The customised image (``status`` ``succeeded``: ``image_url`` is set) or the job to
    poll at ``GET /v1/customize/{job_id}``; ``impression_id`` is the logged impression."""

    job_id: str
    status: JobStatus
    image_url: str | None
    product_id: int
    impression_id: str | None = None
    cached: bool = False


class CustomizationOptions(BaseModel):
    """What a store allows shoppers to choose for one product (marketer-approved lists);
    the product's own attribute values and its variants' options are always allowed."""

    model_config = ConfigDict(extra="forbid")

    colour: list[OptionValue] = Field(default_factory=list, max_length=MAX_OPTIONS)
    material: list[OptionValue] = Field(default_factory=list, max_length=MAX_OPTIONS)
    background: list[OptionValue] = Field(default_factory=list, max_length=MAX_OPTIONS)


class CustomizationOptionsPublic(BaseModel):
    """A product's customisation options: the marketer's lists (``approved``) and every
    allowed value (``allowed``: those plus the product's own)."""

    product_id: int
    approved: CustomizationOptions
    allowed: CustomizationOptions


class ProductSummary(BaseModel):
    """A catalog product as the editing panel lists it."""

    id: int
    sku: str
    title: str
    category: str


class ProductsPublic(BaseModel):
    data: list[ProductSummary]
    count: int
