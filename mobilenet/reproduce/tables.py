"""The MobileNet papers' cost tables, counted exactly from the models and set beside the printed numbers.

Every "ours" number comes from :func:`mobilenet.count_cost` on a model built by the registry (or, for V1 Table 3,
on the library's own layer modules); every "paper" number is the one printed in arXiv 1704.04861 (V1) or
1801.04381 (V2). A cell matches when rounding *or* truncating our exact count to the printed precision gives the
printed number (:func:`mobilenet.cost.matches_printed`), because the papers do both (568.74M prints as 569,
290.68M as 290). Cells where the paper itself is wrong carry the erratum that explains the mismatch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..cost import count_cost, matches_printed
from ..layers import ConvBNAct, DepthwiseSeparable, InvertedResidual, round_channels
from ..models import create_model
from ..models import mobilenet_v1 as v1
from ..models import mobilenet_v2 as v2

# V1 Table 1 exactly as printed: type, stride, filter shape, input size. "5×" is expanded to its five dw/pw pairs.
_REPEAT = [("Conv dw", 1, "3x3x512 dw", "14x14x512"), ("Conv", 1, "1x1x512x512", "14x14x512")]
V1_TABLE1 = [
    # type      stride  filter shape       input size
    ("Conv", 2, "3x3x3x32", "224x224x3"),
    ("Conv dw", 1, "3x3x32 dw", "112x112x32"),
    ("Conv", 1, "1x1x32x64", "112x112x32"),
    ("Conv dw", 2, "3x3x64 dw", "112x112x64"),
    ("Conv", 1, "1x1x64x128", "56x56x64"),
    ("Conv dw", 1, "3x3x128 dw", "56x56x128"),
    ("Conv", 1, "1x1x128x128", "56x56x128"),
    ("Conv dw", 2, "3x3x128 dw", "56x56x128"),
    ("Conv", 1, "1x1x128x256", "28x28x128"),
    ("Conv dw", 1, "3x3x256 dw", "28x28x256"),
    ("Conv", 1, "1x1x256x256", "28x28x256"),
    ("Conv dw", 2, "3x3x256 dw", "28x28x256"),
    ("Conv", 1, "1x1x256x512", "14x14x256"),
    *(_REPEAT * 5),
    ("Conv dw", 2, "3x3x512 dw", "14x14x512"),
    ("Conv", 1, "1x1x512x1024", "7x7x512"),
    ("Conv dw", 2, "3x3x1024 dw", "7x7x1024"),  # printed s2: the erratum
    ("Conv", 1, "1x1x1024x1024", "7x7x1024"),
    ("Avg Pool", 1, "Pool 7x7", "7x7x1024"),
    ("FC", 1, "1024x1000", "1x1x1024"),
    ("Softmax", 1, "Classifier", "1x1x1000"),
]
V1_TABLE1_STRIDE_ERRATUM = (
    "Table 1 prints the last depthwise layer as s2, but its own next row's input (7x7x1024) and the 7x7 pool need "
    "stride 1; the reference TF-Slim code uses stride 1 and only stride 1 gives the 569M total."
)

# V1 Table 2 as printed: layer type -> (Mult-Adds %, parameters %); the counter's kind for each row.
V1_TABLE2 = {
    "Conv 1x1": ("pointwise", 94.86, 74.59),
    "Conv DW 3x3": ("depthwise", 3.06, 1.06),
    "Conv 3x3": ("conv", 1.19, 0.02),
    "Fully Connected": ("linear", 0.18, 24.33),
}
V1_TABLE2_ERRATUM = (
    "the paper prints 1.19 %, but 10,838,016 / 568,740,352 = 1.91 % (a digit transposition: the printed column sums "
    "to 99.29 %, with 1.91 % it sums to 100.01 %)."
)

# V1 Table 3: the 14x14x512 -> 512 layer under cumulative modifications, (Million Mult-Adds, Million Parameters).
V1_TABLE3 = {
    "Convolution": (462, 2.36),
    "Depthwise Separable Conv": (52.3, 0.27),
    "α = 0.75": (29.6, 0.15),
    "ρ = 0.714": (15.1, 0.15),
}
TABLE3_SIDE, TABLE3_CHANNELS, TABLE3_ALPHA, TABLE3_RHO = 14, 512, 0.75, 0.714

# V2 Table 2 as printed: input, operator, t, c, n, s ("k" classes is 1000 here).
V2_TABLE2 = [
    ("224²x3", "conv2d", None, 32, 1, 2),
    ("112²x32", "bottleneck", 1, 16, 1, 1),
    ("112²x16", "bottleneck", 6, 24, 2, 2),
    ("56²x24", "bottleneck", 6, 32, 3, 2),
    ("28²x32", "bottleneck", 6, 64, 4, 2),
    ("14²x64", "bottleneck", 6, 96, 3, 1),
    ("14²x96", "bottleneck", 6, 160, 3, 2),
    ("7²x160", "bottleneck", 6, 320, 1, 1),
    ("7²x320", "conv2d 1x1", None, 1280, 1, 1),
    ("7²x1280", "avgpool 7x7", None, None, 1, None),
    ("1x1x1280", "conv2d 1x1", None, 1000, None, None),
]
V2_HEADLINE = (300, 3.4)  # §6.1: "300 million multiply-adds and uses 3.4 million parameters"
V2_WIDE_NOTE = (
    "V2 Table 4 prints 585M / 6.9M for α = 1.4; a direct count (and TF-Slim's own table) gives 582M / 6.06M, so "
    "the paper's row does not follow from its architecture."
)


@dataclass
class Cell:
    """One number (or shape) we computed, beside the one the paper prints.

    ``ours`` is in the paper's unit (millions, percent, a shape string); ``exact`` the exact count behind it.
    """

    ours: float | str
    printed: float | str | None = None
    exact: int | float | str | None = None
    decimals: int = 2
    erratum: str = ""

    @property
    def match(self) -> bool | None:
        if self.printed is None:
            return None
        if isinstance(self.ours, str) or isinstance(self.printed, str):
            return str(self.ours) == str(self.printed)
        return matches_printed(float(self.ours), float(self.printed))

    @property
    def mark(self) -> str:
        m = self.match
        return "" if m is None else "✓" if m else "✗ (erratum)" if self.erratum else "✗"

    def ours_text(self) -> str:
        if isinstance(self.ours, str):
            return self.ours
        return str(self.ours) if isinstance(self.ours, int) else f"{self.ours:,.{self.decimals}f}"

    def paper_text(self) -> str:
        if self.printed is None:
            return "—"
        return f"{self.printed} {self.mark}"

    def to_dict(self) -> dict:
        return {**asdict(self), "match": self.match}


@dataclass
class CostTable:
    """A paper table rebuilt from the code: row labels, then cells (or plain strings), plus explanatory notes."""

    key: str
    title: str
    columns: list[str]
    rows: list[list]
    notes: list[str] = field(default_factory=list)

    def cells(self):
        """Yields ``(row_label, column, cell)`` for every :class:`Cell` in the table."""
        for row in self.rows:
            for col, value in zip(self.columns[1:], row[1:]):
                if isinstance(value, Cell):
                    yield row[0], col, value


def _weights(cost) -> int:
    # The V1 paper and TF-Slim count parameters as conv/FC weights: no biases, no BN.
    return sum(layer.weight_params for layer in cost.layers)


def _model_cells(name: str, printed: tuple | None, **kwargs) -> list[Cell]:
    cost = count_cost(create_model(name, **kwargs))
    top1, madds, params = printed if printed else (None, None, None)
    return [
        f"{top1}" if top1 is not None else "—",
        Cell(cost.mult_adds / 1e6, madds, cost.mult_adds),
        Cell(_weights(cost) / 1e6, params, _weights(cost), decimals=3),
    ]


_MODEL_COLUMNS = ["Model", "ImageNet top-1 % (paper)", "Million Mult-Adds", "Million Parameters"]


def v1_table1() -> CostTable:
    """V1 Table 1: the body layer by layer, our filter shape / stride / input size beside the printed ones."""
    cost = count_cost(create_model("mobilenet_v1"))
    side, rows, last = 224, [], None
    layers = iter(cost.layers)
    for kind, stride, filt, size in V1_TABLE1:
        if kind in ("Avg Pool", "Softmax"):
            prev = rows[-1]
            ours_in = prev[-1].exact if kind == "Avg Pool" else f"1x1x{last.out_chs}"
            ours_filt = f"Pool {side}x{side}" if kind == "Avg Pool" else "Classifier"
            ours_out = f"1x1x{int(ours_in.split('x')[-1])}"
            rows.append([kind, Cell(stride, stride, decimals=0), Cell(ours_filt, filt),
                         Cell(ours_in, size), "", "", Cell(ours_out, exact=ours_out)])
            continue
        last = next(layers)
        if last.kind == "linear":
            ours_filt, ours_in = f"{last.in_chs}x{last.out_chs}", f"1x1x{last.in_chs}"
        elif last.kind == "depthwise":
            ours_filt, ours_in = f"{last.kernel}x{last.kernel}x{last.in_chs} dw", f"{side}x{side}x{last.in_chs}"
        else:
            ours_filt, ours_in = f"{last.kernel}x{last.kernel}x{last.in_chs}x{last.out_chs}", \
                f"{side}x{side}x{last.in_chs}"
        erratum = V1_TABLE1_STRIDE_ERRATUM if (kind, stride, size) == ("Conv dw", 2, "7x7x1024") else ""
        out_shape = f"{last.out_side}x{last.out_width}x{last.out_chs}"
        rows.append([kind, Cell(last.stride, stride, decimals=0, erratum=erratum), Cell(ours_filt, filt),
                     Cell(ours_in, size), Cell(last.mult_adds / 1e6, exact=last.mult_adds),
                     Cell(last.weight_params, exact=last.weight_params, decimals=0), Cell(out_shape, exact=out_shape)])
        side = last.out_side if last.kind != "linear" else 1
    n_layers = sum(1 for layer in cost.layers if layer.kind != "linear") + 1
    return CostTable(
        "v1_table1", "V1 Table 1: MobileNet body architecture (224x224, α = 1)",
        ["Type", "Stride", "Filter shape", "Input size", "Million Mult-Adds", "Parameters", "Output size"],
        rows,
        [f"Erratum: {V1_TABLE1_STRIDE_ERRATUM}",
         f"Counting depthwise and pointwise layers separately gives {n_layers} layers (the paper: 28).",
         f"Total: {cost.mult_adds:,} Mult-Adds, {_weights(cost):,} weights (paper: 569M, 4.2M)."],
    )


def v1_table2() -> CostTable:
    """V1 Table 2: share of Mult-Adds and weights per layer type."""
    by_kind = count_cost(create_model("mobilenet_v1")).by_kind()
    rows = []
    for label, (kind, madds, params) in V1_TABLE2.items():
        k = by_kind[kind]
        erratum = V1_TABLE2_ERRATUM if label == "Conv 3x3" else ""
        rows.append([label, Cell(k["mult_adds_pct"], madds, k["mult_adds"], erratum=erratum),
                     Cell(k["params_pct"], params, k["weight_params"])])
    ours_sum = sum(by_kind[k]["mult_adds_pct"] for k, _, _ in V1_TABLE2.values())
    printed_sum = sum(m for _, m, _ in V1_TABLE2.values())
    return CostTable(
        "v1_table2", "V1 Table 2: resources per layer type (MobileNet, 224x224, α = 1)",
        ["Type", "Mult-Adds %", "Parameters %"], rows,
        [f"Erratum (Conv 3x3 Mult-Adds): {V1_TABLE2_ERRATUM}",
         f"Column sums: ours {ours_sum:.2f} %, printed {printed_sum:.2f} %.",
         "Parameters are counted as conv/FC weights (no biases, no BN), the convention the printed shares use.",
         f"The text's '95 % of computation in 1x1 convolutions, 75 % of the parameters': ours "
         f"{by_kind['pointwise']['mult_adds_pct']:.2f} % and {by_kind['pointwise']['params_pct']:.2f} %."],
    )


def v1_table3() -> CostTable:
    """V1 Table 3: the 14x14, 512 -> 512 layer as a full conv, separable, thinner (α) and smaller (ρ)."""
    thin = round_channels(TABLE3_CHANNELS, TABLE3_ALPHA, "tf-slim")
    small = round(TABLE3_SIDE * TABLE3_RHO)
    c = TABLE3_CHANNELS
    variants = {
        "Convolution": (ConvBNAct(c, c, 3), TABLE3_SIDE),
        "Depthwise Separable Conv": (DepthwiseSeparable(c, c), TABLE3_SIDE),
        "α = 0.75": (DepthwiseSeparable(thin, thin), TABLE3_SIDE),
        "ρ = 0.714": (DepthwiseSeparable(thin, thin), small),
    }
    rows = []
    for label, (module, side) in variants.items():
        cost = count_cost(module, side)
        madds, params = V1_TABLE3[label]
        rows.append([label, Cell(cost.mult_adds / 1e6, madds, cost.mult_adds),
                     Cell(_weights(cost) / 1e6, params, _weights(cost), decimals=4)])
    return CostTable(
        "v1_table3", "V1 Table 3: one 14x14x512 -> 512 layer under each modification (cumulative)",
        ["Layer/Modification", "Million Mult-Adds", "Million Parameters"], rows,
        [f"α = 0.75 gives {thin} channels; ρ = 0.714 gives a {small}x{small} map."],
    )


def v1_table4() -> CostTable:
    """V1 Table 4: depthwise separable vs full convolution MobileNet."""
    rows = [["Conv MobileNet", *_model_cells("mobilenet_v1_conv", v1.PUBLISHED_CONV[(1.0, 224)])],
            ["MobileNet", *_model_cells("mobilenet_v1", v1.PUBLISHED[(1.0, 224)])]]
    conv, dw = rows[0][2].exact, rows[1][2].exact
    no_fc = conv - 1024 * 1000
    rows[0][2].erratum = (
        f"our exact count is {conv:,} Mult-Adds, which rounds to {round(conv / 1e6)}M, not the printed 4866M; "
        f"4866 is what the body alone gives without the 1024x1000 FC layer ({no_fc:,}). Every other V1 total "
        "includes the FC, so the printed number looks like it left the FC out."
    )
    cw, dwp = rows[0][3].exact, rows[1][3].exact
    return CostTable(
        "v1_table4", "V1 Table 4: depthwise separable vs full convolution MobileNet (224x224)",
        _MODEL_COLUMNS, rows,
        [f"Conv MobileNet: {rows[0][2].erratum}",
         f"Cost ratio: MobileNet needs {dw / conv:.1%} of the Mult-Adds ({conv / dw:.2f}x fewer) and "
         f"{dwp / cw:.1%} of the parameters ({cw / dwp:.2f}x fewer); printed: 569/4866 = {569 / 4866:.1%}, "
         f"4.2/29.3 = {4.2 / 29.3:.1%}."],
    )


def v1_table5() -> CostTable:
    """V1 Table 5: narrow (α = 0.75) vs shallow MobileNet at similar cost."""
    rows = [["0.75 MobileNet", *_model_cells("mobilenet_v1", v1.PUBLISHED[(0.75, 224)], alpha=0.75)],
            ["Shallow MobileNet", *_model_cells("mobilenet_v1_shallow", v1.PUBLISHED_SHALLOW[(1.0, 224)])]]
    return CostTable("v1_table5", "V1 Table 5: narrow vs shallow MobileNet (224x224)", _MODEL_COLUMNS, rows,
                     [f"Shallow MobileNet removes the {v1.REPEATED_LAYERS.stop - v1.REPEATED_LAYERS.start} "
                      "separable layers at 14x14x512."])


def v1_table6() -> CostTable:
    """V1 Table 6: width multiplier α at 224x224."""
    rows = [[f"{a:g} MobileNet-224", *_model_cells("mobilenet_v1", v1.PUBLISHED[(a, 224)], alpha=a)]
            for a in (1.0, 0.75, 0.5, 0.25)]
    return CostTable("v1_table6", "V1 Table 6: MobileNet width multiplier α", _MODEL_COLUMNS, rows,
                     ["Channels are rounded as TF-Slim does: max(int(α·c), 8)."])


def v1_table7() -> CostTable:
    """V1 Table 7: resolution (ρ) at α = 1."""
    rows = [[f"1.0 MobileNet-{r}", *_model_cells("mobilenet_v1", v1.PUBLISHED[(1.0, r)], resolution=r)]
            for r in (224, 192, 160, 128)]
    return CostTable("v1_table7", "V1 Table 7: MobileNet resolution (ρ = 1, 6/7, 5/7, 4/7)", _MODEL_COLUMNS, rows,
                     ["290.68M prints as 290: the paper truncates here (it rounds 568.74M up to 569)."])


def v1_grid() -> CostTable:
    """The 16 α x resolution configurations of the paper's Figures 4 and 5, with any printed numbers."""
    rows = []
    for a in (1.0, 0.75, 0.5, 0.25):
        for r in (224, 192, 160, 128):
            rows.append([f"{a:g} MobileNet-{r}", *_model_cells("mobilenet_v1", v1.PUBLISHED.get((a, r)),
                                                                alpha=a, resolution=r)])
    return CostTable(
        "v1_grid", "V1 α x resolution grid (the 16 models of Figures 4 and 5)", _MODEL_COLUMNS, rows,
        ["The paper prints numbers for 8 of the 16 (Tables 6, 7 and 9); Figures 4 and 5 plot all 16 without "
         "printing them."],
    )


def _v2_rows(model: nn.Module) -> list[tuple]:
    """Rebuilds V2 Table 2's rows (input, operator, t, c, n, s) from a built model's modules."""
    shapes: list[tuple] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: shapes.append(tuple(inp[0].shape)))
             for m in model.features]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()

    def size(shape):
        return f"{shape[2]}²x{shape[1]}"

    feats = list(model.features)
    rows = [(size(shapes[0]), "conv2d", None, feats[0].out_chs, 1, feats[0].stride)]
    i = 1
    while i < len(feats) and isinstance(feats[i], InvertedResidual):
        first, n = feats[i], 1
        while i + n < len(feats) and isinstance(feats[i + n], InvertedResidual) \
                and feats[i + n].out_chs == first.out_chs:
            n += 1
        mid = first.dw.conv.in_channels
        rows.append((size(shapes[i]), "bottleneck", mid // first.in_chs, first.out_chs, n, first.stride))
        i += n
    last = feats[i]
    rows.append((size(shapes[i]), "conv2d 1x1", None, last.out_chs, 1, last.stride))
    side = shapes[i][2]
    rows.append((f"{side}²x{last.out_chs}", f"avgpool {side}x{side}", None, None, 1, None))
    rows.append((f"1x1x{model.classifier.in_features}", "conv2d 1x1", None, model.classifier.out_features,
                 None, None))
    return rows


def v2_table2() -> CostTable:
    """V2 Table 2, each row rebuilt from the model's modules beside the printed row."""
    rows = []
    for printed, ours in zip(V2_TABLE2, _v2_rows(create_model("mobilenet_v2"))):
        rows.append([printed[1], Cell(ours[0], printed[0]),
                     *("-" if o is None and p is None else Cell(o, p) for o, p in zip(ours[2:], printed[2:]))])
    n_blocks = sum(r[4].ours for r in rows if r[0] == "bottleneck")
    return CostTable(
        "v2_table2", "V2 Table 2: MobileNetV2 architecture (224x224, α = 1), rebuilt from the model",
        ["Operator", "Input", "t", "c", "n", "s"], rows,
        [f"{n_blocks} bottleneck blocks (the text says 19; the n column sums to 17)."],
    )


def v2_headline() -> CostTable:
    """V2's headline cost (300M Mult-Adds, 3.4M parameters) and its α = 1.4 row of Table 4."""
    rows = [["MobileNetV2 (α = 1)", *_model_cells("mobilenet_v2", v2.PUBLISHED[(1.0, 224)])],
            ["MobileNetV2 (α = 1.4)", *_model_cells("mobilenet_v2", v2.PUBLISHED[(1.4, 224)], alpha=1.4)]]
    for cell in rows[1][2:]:
        cell.erratum = V2_WIDE_NOTE
    return CostTable(
        "v2_headline", "V2 headline (§6.1: 300M Mult-Adds, 3.4M parameters) and Table 4's α = 1.4 row",
        ["Model", "ImageNet top-1 % (paper)", "Million Mult-Adds", "Million Parameters"], rows,
        [f"300.77M prints as {V2_HEADLINE[0]} and 3.47M as {V2_HEADLINE[1]}: the V2 paper truncates (rounding "
         "would give 301 and 3.5).", f"α = 1.4: {V2_WIDE_NOTE}"],
    )


# MobileNetV4's published numbers (../shared/papers.md §5): the paper's Conv-S (0.2G Mult-Adds, 3.8M params) and
# timm's parameter counts for its released weights, with each model's published input side.
V4_PUBLISHED = {
    # model                        side  paper G  paper M  timm M
    "mobilenet_v4_conv_small": (224, 0.2, 3.8, 3.77),
    "mobilenet_v4_conv_medium": (224, None, None, 9.72),
    "mobilenet_v4_conv_large": (384, None, None, 32.59),
    "mobilenet_v4_hybrid_medium": (224, None, None, 11.07),
    "mobilenet_v4_hybrid_large": (384, None, None, 37.76),
}


def v4_costs() -> CostTable:
    """MobileNetV4's five models at 224 and at their published input side, beside the paper's and timm's numbers."""
    from ..models import published_table

    rows = []
    for name, (side, madds_g, params_m, timm_m) in V4_PUBLISHED.items():
        with torch.device("meta"):  # only shapes are needed; the large models would allocate 150 MB each
            model = create_model(name)
        for res in sorted({224, side}):
            cost = count_cost(model, res)
            top1 = published_table(name).get((1.0, res), (None,))[0]
            rows.append([name, res, f"{top1}" if top1 is not None else "—",
                         Cell(cost.mult_adds / 1e9, madds_g if res == 224 else None, cost.mult_adds, decimals=3),
                         Cell(cost.params / 1e6, params_m, cost.params, decimals=3),
                         Cell(cost.params / 1e6, timm_m, cost.params, decimals=3)])
    return CostTable(
        "v4_costs", "MobileNetV4 (arXiv 2404.10518): cost at 224 and at each model's published input side",
        ["Model", "Input side", "ImageNet top-1 % (published)", "Billion Mult-Adds", "Million Parameters",
         "Million Parameters, timm's count"], rows,
        ["Mult-Adds include attention's Q·Kᵀ and A·V products (hybrid models); params count every parameter, BN "
         "and layer scale included, as timm's published counts do.",
         "Of the paper's figures only Conv-S's are on record (../shared/papers.md §5); the larger models are compared "
         "with timm's published parameter counts, the layout their released weights have."],
    )


def all_tables() -> list[CostTable]:
    """Every cost table of the report, in the paper's order."""
    return [v1_table1(), v1_table2(), v1_table3(), v1_table4(), v1_table5(), v1_table6(), v1_table7(), v1_grid(),
            v2_table2(), v2_headline(), v4_costs()]
