"""torchvision's and timm's MobileNets rebuilt with their exact module structure, for tests that cannot import them.

Each replica's ``state_dict()`` has the library's key names and shapes (torchvision/models/mobilenetv2.py and
mobilenetv3.py; timm/models/_efficientnet_blocks.py, efficientnet.py and mobilenetv3.py), and its forward pass is the
library's, so it is the reference a converted model must reproduce. tests/test_convert.py checks that each one has
the library's published parameter count.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from mobilenet.layers import make_divisible


class _Net(nn.Module):
    """features → global average pool → classifier, as torchvision's MobileNets run."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential):
        super().__init__()
        self.features, self.classifier = features, classifier

    def forward(self, x):
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


# --- torchvision's structure (torchvision/models/mobilenetv2.py, mobilenetv3.py) -------------------------------

def _cna(cin, cout, k=3, s=1, groups=1, act=nn.ReLU6, eps=1e-5):
    layers = [nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout, eps=eps)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


class _TvV2Block(nn.Module):
    def __init__(self, inp, oup, stride, t):
        super().__init__()
        hidden, self.res = int(round(inp * t)), stride == 1 and inp == oup
        layers = [] if t == 1 else [_cna(inp, hidden, 1)]
        self.conv = nn.Sequential(*layers, _cna(hidden, hidden, 3, stride, hidden),
                                  nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup))

    def forward(self, x):
        return x + self.conv(x) if self.res else self.conv(x)


def tv_v2(width=1.0):
    setting = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]
    c = make_divisible(32 * width)
    features = [_cna(3, c, 3, 2)]
    for t, o, n, s in setting:
        for i in range(n):
            features.append(_TvV2Block(c, make_divisible(o * width), s if i == 0 else 1, t))
            c = make_divisible(o * width)
    last = make_divisible(1280 * max(1.0, width))
    features.append(_cna(c, last, 1))
    return _Net(nn.Sequential(*features), nn.Sequential(nn.Dropout(0.2), nn.Linear(last, 1000)))


class _TvSE(nn.Module):
    def __init__(self, c):
        super().__init__()
        squeeze = make_divisible(c // 4, 8)
        self.fc1, self.relu, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.ReLU(), nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        return x * nn.functional.hardsigmoid(self.fc2(self.relu(self.fc1(nn.functional.adaptive_avg_pool2d(x, 1)))))


class _TvV3Block(nn.Module):
    def __init__(self, cin, k, exp, out, se, nl, s):
        super().__init__()
        act, self.res = (nn.Hardswish if nl == "HS" else nn.ReLU), s == 1 and cin == out
        layers = [_cna(cin, exp, 1, act=act, eps=1e-3)] if exp != cin else []
        layers.append(_cna(exp, exp, k, s, exp, act=act, eps=1e-3))
        layers += [_TvSE(exp)] if se else []
        self.block = nn.Sequential(*layers, _cna(exp, out, 1, act=None, eps=1e-3))

    def forward(self, x):
        return x + self.block(x) if self.res else self.block(x)


TV_LARGE = [(16, 3, 16, 16, 0, "RE", 1), (16, 3, 64, 24, 0, "RE", 2), (24, 3, 72, 24, 0, "RE", 1),
            (24, 5, 72, 40, 1, "RE", 2), (40, 5, 120, 40, 1, "RE", 1), (40, 5, 120, 40, 1, "RE", 1),
            (40, 3, 240, 80, 0, "HS", 2), (80, 3, 200, 80, 0, "HS", 1), (80, 3, 184, 80, 0, "HS", 1),
            (80, 3, 184, 80, 0, "HS", 1), (80, 3, 480, 112, 1, "HS", 1), (112, 3, 672, 112, 1, "HS", 1),
            (112, 5, 672, 160, 1, "HS", 2), (160, 5, 960, 160, 1, "HS", 1), (160, 5, 960, 160, 1, "HS", 1)]
TV_SMALL = [(16, 3, 16, 16, 1, "RE", 2), (16, 3, 72, 24, 0, "RE", 2), (24, 3, 88, 24, 0, "RE", 1),
            (24, 5, 96, 40, 1, "HS", 2), (40, 5, 240, 40, 1, "HS", 1), (40, 5, 240, 40, 1, "HS", 1),
            (40, 5, 120, 48, 1, "HS", 1), (48, 5, 144, 48, 1, "HS", 1), (48, 5, 288, 96, 1, "HS", 2),
            (96, 5, 576, 96, 1, "HS", 1), (96, 5, 576, 96, 1, "HS", 1)]


def tv_v3(setting, last_channel):
    features = [_cna(3, 16, 3, 2, act=nn.Hardswish, eps=1e-3)] + [_TvV3Block(*row) for row in setting]
    c = setting[-1][3]
    features.append(_cna(c, 6 * c, 1, act=nn.Hardswish, eps=1e-3))
    classifier = nn.Sequential(nn.Linear(6 * c, last_channel), nn.Hardswish(), nn.Dropout(0.2),
                               nn.Linear(last_channel, 1000))
    return _Net(nn.Sequential(*features), classifier)


# --- timm's structure (timm/models/_efficientnet_blocks.py, efficientnet.py, mobilenetv3.py) -------------------

class _TimmSE(nn.Module):
    def __init__(self, c):
        super().__init__()
        rd = make_divisible(c * 0.25)
        self.conv_reduce, self.conv_expand = nn.Conv2d(c, rd, 1), nn.Conv2d(rd, c, 1)

    def forward(self, x):
        s = self.conv_expand(torch.relu(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * nn.functional.hardsigmoid(s)


class _TimmDS(nn.Module):  # DepthwiseSeparableConv
    def __init__(self, cin, cout, k, s, act, pw_act, noskip, se=False):
        super().__init__()
        self.act, self.pw_act, self.skip = act(), pw_act, s == 1 and cin == cout and not noskip
        self.conv_dw, self.bn1 = nn.Conv2d(cin, cin, k, s, k // 2, groups=cin, bias=False), nn.BatchNorm2d(cin)
        self.se = _TimmSE(cin) if se else nn.Identity()
        self.conv_pw, self.bn2 = nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)

    def forward(self, x):
        y = self.bn2(self.conv_pw(self.se(self.act(self.bn1(self.conv_dw(x))))))
        y = self.act(y) if self.pw_act else y
        return x + y if self.skip else y


class _TimmIR(nn.Module):  # InvertedResidual
    def __init__(self, cin, cout, k, s, e, act, se=False):
        super().__init__()
        mid, self.act, self.skip = make_divisible(cin * e), act(), s == 1 and cin == cout
        self.conv_pw, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv_dw, self.bn2 = nn.Conv2d(mid, mid, k, s, k // 2, groups=mid, bias=False), nn.BatchNorm2d(mid)
        self.se = _TimmSE(mid) if se else nn.Identity()
        self.conv_pwl, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)

    def forward(self, x):
        y = self.act(self.bn2(self.conv_dw(self.act(self.bn1(self.conv_pw(x))))))
        y = self.bn3(self.conv_pwl(self.se(y)))
        return x + y if self.skip else y


class _TimmCBA(nn.Module):  # ConvBnAct
    def __init__(self, cin, cout, act):
        super().__init__()
        self.conv, self.bn1, self.act = nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), act()

    def forward(self, x):
        return self.act(self.bn1(self.conv(x)))


class _TimmNet(nn.Module):
    def __init__(self, stem, stages, act, head=None, efficient_head=None):
        super().__init__()
        self.conv_stem, self.bn1, self.act = nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), act()
        self.blocks = nn.Sequential(*[nn.Sequential(*blocks) for blocks in stages])
        c = [m for m in self.blocks.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features
        self.head, self.efficient = head, efficient_head
        if head:  # EfficientNet-style: conv_head + bn2 before pooling (V2)
            self.conv_head, self.bn2 = nn.Conv2d(c, head, 1, bias=False), nn.BatchNorm2d(head)
        if efficient_head:  # MobileNetV3: pooling, then conv_head with bias and the activation
            self.conv_head = nn.Conv2d(c, efficient_head, 1)
        self.classifier = nn.Linear(head or efficient_head or c, 1000)

    def forward(self, x):
        x = self.blocks(self.act(self.bn1(self.conv_stem(x))))
        if self.head:
            x = self.act(self.bn2(self.conv_head(x)))
        x = x.mean((2, 3), keepdim=True)
        if self.efficient:
            x = self.act(self.conv_head(x))
        return self.classifier(x.flatten(1))


def timm_v1():
    r6 = nn.ReLU6
    ds = partial(_TimmDS, k=3, act=r6, pw_act=True, noskip=True)  # "dsa" blocks
    stages = [[ds(32, 64, s=1)], [ds(64, 128, s=2), ds(128, 128, s=1)], [ds(128, 256, s=2), ds(256, 256, s=1)],
              [ds(256, 512, s=2)] + [ds(512, 512, s=1) for _ in range(5)], [ds(512, 1024, s=2), ds(1024, 1024, s=1)]]
    return _TimmNet(32, stages, r6)


def timm_v2():
    r6, stages, c = nn.ReLU6, [[_TimmDS(32, 16, 3, 1, nn.ReLU6, pw_act=False, noskip=False)]], 16
    for o, n, s in [(24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1)]:
        stages.append([_TimmIR(c if i == 0 else o, o, 3, s if i == 0 else 1, 6, r6) for i in range(n)])
        c = o
    return _TimmNet(32, stages, r6, head=1280)


def timm_v3(small: bool):
    re, hs = nn.ReLU, nn.Hardswish
    if small:  # the arch_def strings of _gen_mobilenet_v3, decoded
        stages = [[_TimmDS(16, 16, 3, 2, re, pw_act=False, noskip=False, se=True)],
                  [_TimmIR(16, 24, 3, 2, 4.5, re), _TimmIR(24, 24, 3, 1, 3.67, re)],
                  [_TimmIR(24, 40, 5, 2, 4, hs, True), _TimmIR(40, 40, 5, 1, 6, hs, True),
                   _TimmIR(40, 40, 5, 1, 6, hs, True)],
                  [_TimmIR(40, 48, 5, 1, 3, hs, True), _TimmIR(48, 48, 5, 1, 3, hs, True)],
                  [_TimmIR(48, 96, 5, 2, 6, hs, True)] + [_TimmIR(96, 96, 5, 1, 6, hs, True) for _ in range(2)],
                  [_TimmCBA(96, 576, hs)]]
        return _TimmNet(16, stages, hs, efficient_head=1024)
    stages = [[_TimmDS(16, 16, 3, 1, re, pw_act=False, noskip=False)],
              [_TimmIR(16, 24, 3, 2, 4, re), _TimmIR(24, 24, 3, 1, 3, re)],
              [_TimmIR(24, 40, 5, 2, 3, re, True)] + [_TimmIR(40, 40, 5, 1, 3, re, True) for _ in range(2)],
              [_TimmIR(40, 80, 3, 2, 6, hs), _TimmIR(80, 80, 3, 1, 2.5, hs), _TimmIR(80, 80, 3, 1, 2.3, hs),
               _TimmIR(80, 80, 3, 1, 2.3, hs)],
              [_TimmIR(80, 112, 3, 1, 6, hs, True), _TimmIR(112, 112, 3, 1, 6, hs, True)],
              [_TimmIR(112, 160, 5, 2, 6, hs, True)] + [_TimmIR(160, 160, 5, 1, 6, hs, True) for _ in range(2)],
              [_TimmCBA(160, 960, hs)]]
    return _TimmNet(16, stages, hs, efficient_head=1280)


# --- timm's MobileNetV4 (timm/models/mobilenetv3.py _gen_mobilenet_v4, _efficientnet_blocks.py, attention2d.py) ----
# Each stage is a list of rows, transcribed from timm's arch_def: ("cn", kernel, out, stride),
# ("er", kernel, exp_ratio, out, stride), ("uir", dw_start, dw_mid, exp_ratio, out, stride[, repeats]),
# ("mqa", heads, key_dim, kv_stride, out).

class _TimmCNA(nn.Module):  # ConvNormAct: conv, bn (BatchNormAct2d)
    def __init__(self, cin, cout, k, s=1, groups=1, act=None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False)
        self.bn, self.act = nn.BatchNorm2d(cout), act() if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class _TimmCn(nn.Module):  # ConvBnAct: conv, bn1
    def __init__(self, cin, cout, k, s, act):
        super().__init__()
        self.conv, self.bn1 = nn.Conv2d(cin, cout, k, s, (k - 1) // 2, bias=False), nn.BatchNorm2d(cout)
        self.act = act()

    def forward(self, x):
        return self.act(self.bn1(self.conv(x)))


class _TimmLayerScale(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((c,), 1e-5))

    def forward(self, x):
        return x * self.gamma[None, :, None, None]


class _TimmER(nn.Module):  # EdgeResidual (fused IB)
    def __init__(self, cin, cout, k, s, e, act):
        super().__init__()
        mid, self.act, self.skip = make_divisible(cin * e), act(), s == 1 and cin == cout
        self.conv_exp, self.bn1 = nn.Conv2d(cin, mid, k, s, (k - 1) // 2, bias=False), nn.BatchNorm2d(mid)
        self.conv_pwl, self.bn2 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)

    def forward(self, x):
        y = self.bn2(self.conv_pwl(self.act(self.bn1(self.conv_exp(x)))))
        return x + y if self.skip else y


class _TimmUIR(nn.Module):  # UniversalInvertedResidual
    def __init__(self, cin, cout, start, mid_k, s, e, act, scale):
        super().__init__()
        mid, self.skip = make_divisible(cin * e), s == 1 and cin == cout
        self.dw_start = _TimmCNA(cin, cin, start, 1 if mid_k else s, cin) if start else nn.Identity()
        self.pw_exp = _TimmCNA(cin, mid, 1, act=act)
        self.dw_mid = _TimmCNA(mid, mid, mid_k, s, mid, act=act) if mid_k else nn.Identity()
        self.pw_proj = _TimmCNA(mid, cout, 1)
        self.layer_scale = _TimmLayerScale(cout) if scale else nn.Identity()

    def forward(self, x):
        y = self.layer_scale(self.pw_proj(self.dw_mid(self.pw_exp(self.dw_start(x)))))
        return x + y if self.skip else y


class _TimmMQA(nn.Module):  # MultiQueryAttention2d
    def __init__(self, dim, heads, key_dim, kv_stride):
        super().__init__()
        self.heads, self.key_dim = heads, key_dim
        self.query = nn.Sequential()
        self.query.add_module("proj", nn.Conv2d(dim, heads * key_dim, 1, bias=False))
        self.key, self.value = nn.Sequential(), nn.Sequential()
        for seq in (self.key, self.value):
            if kv_stride > 1:
                seq.add_module("down_conv", nn.Conv2d(dim, dim, 3, kv_stride, 1, groups=dim, bias=False))
                seq.add_module("norm", nn.BatchNorm2d(dim))
            seq.add_module("proj", nn.Conv2d(dim, key_dim, 1, bias=False))
        self.output = nn.Sequential()
        self.output.add_module("proj", nn.Conv2d(heads * key_dim, dim, 1, bias=False))

    def forward(self, x):
        b, _, h, w = x.shape
        q = self.query(x).reshape(b, self.heads, self.key_dim, -1).transpose(-1, -2)
        k = self.key(x).reshape(b, self.key_dim, -1).transpose(1, 2).unsqueeze(1)
        v = self.value(x).reshape(b, self.key_dim, -1).transpose(1, 2).unsqueeze(1)
        o = nn.functional.scaled_dot_product_attention(q, k, v)  # (b, heads, n, key_dim)
        o = o.transpose(1, 2).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return self.output(o)


class _TimmMobileAttention(nn.Module):
    def __init__(self, dim, heads, key_dim, kv_stride, scale):
        super().__init__()
        self.norm, self.attn = nn.BatchNorm2d(dim), _TimmMQA(dim, heads, key_dim, kv_stride)
        self.layer_scale = _TimmLayerScale(dim) if scale else nn.Identity()

    def forward(self, x):
        return x + self.layer_scale(self.attn(self.norm(x)))


class _TimmMNv4(nn.Module):
    def __init__(self, stem, stages, act, scale):
        super().__init__()
        self.conv_stem, self.bn1, self.act = nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), act()
        c, built = stem, []
        for stage in stages:
            blocks = []
            for row in stage:
                kind, *a = row
                reps = a[5] if kind == "uir" and len(a) > 5 else 1
                for i in range(reps):
                    s = (a[4] if kind == "uir" else a[-1]) if i == 0 else 1
                    if kind == "cn":
                        blocks.append(_TimmCn(c, a[1], a[0], s, act))
                    elif kind == "er":
                        blocks.append(_TimmER(c, a[2], a[0], s, a[1], act))
                    elif kind == "uir":
                        blocks.append(_TimmUIR(c, a[3], a[0], a[1], s, a[2], act, scale))
                    else:
                        blocks.append(_TimmMobileAttention(c, a[0], a[1], a[2], scale))
                    c = c if kind == "mqa" else a[{"cn": 1, "er": 2, "uir": 3}[kind]]
            built.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*built)
        self.conv_head, self.norm_head = nn.Conv2d(c, 1280, 1, bias=False), nn.BatchNorm2d(1280)
        self.classifier = nn.Linear(1280, 1000)

    def forward(self, x):
        x = self.blocks(self.act(self.bn1(self.conv_stem(x))))
        x = self.act(self.norm_head(self.conv_head(x.mean((2, 3), keepdim=True))))
        return self.classifier(x.flatten(1))


def _u(start, mid, e, out, s=1, n=1):
    return ("uir", start, mid, e, out, s, n)


_MQA_M2, _MQA_M3 = ("mqa", 4, 64, 2, 160), ("mqa", 4, 64, 1, 256)
_MQA_L2, _MQA_L3 = ("mqa", 8, 48, 2, 192), ("mqa", 8, 64, 1, 512)
TIMM_V4 = {  # name: (stem, act, layer scale, stages)
    "mobilenetv4_conv_small": (32, nn.ReLU, False, [
        [("cn", 3, 32, 2), ("cn", 1, 32, 1)], [("cn", 3, 96, 2), ("cn", 1, 64, 1)],
        [_u(5, 5, 3, 96, 2), _u(0, 3, 2, 96, n=4), _u(3, 0, 4, 96)],
        [_u(3, 3, 6, 128, 2), _u(5, 5, 4, 128), _u(0, 5, 4, 128), _u(0, 5, 3, 128), _u(0, 3, 4, 128, n=2)],
        [("cn", 1, 960, 1)]]),
    "mobilenetv4_conv_medium": (32, nn.ReLU, False, [
        [("er", 3, 4, 48, 2)], [_u(3, 5, 4, 80, 2), _u(3, 3, 2, 80)],
        [_u(3, 5, 6, 160, 2), _u(3, 3, 4, 160, n=2), _u(3, 5, 4, 160), _u(3, 3, 4, 160), _u(3, 0, 4, 160),
         _u(0, 0, 2, 160), _u(3, 0, 4, 160)],
        [_u(5, 5, 6, 256, 2), _u(5, 5, 4, 256), _u(3, 5, 4, 256, n=2), _u(0, 0, 4, 256), _u(3, 0, 4, 256),
         _u(3, 5, 2, 256), _u(5, 5, 4, 256), _u(0, 0, 4, 256, n=2), _u(5, 0, 2, 256)],
        [("cn", 1, 960, 1)]]),
    "mobilenetv4_conv_large": (24, nn.ReLU, False, [
        [("er", 3, 4, 48, 2)], [_u(3, 5, 4, 96, 2), _u(3, 3, 4, 96)],
        [_u(3, 5, 4, 192, 2), _u(3, 3, 4, 192, n=3), _u(3, 5, 4, 192), _u(5, 3, 4, 192, n=5), _u(3, 0, 4, 192)],
        [_u(5, 5, 4, 512, 2, n=4), _u(5, 0, 4, 512), _u(5, 3, 4, 512), _u(5, 0, 4, 512, n=2), _u(5, 3, 4, 512),
         _u(5, 5, 4, 512), _u(5, 0, 4, 512, n=3)],
        [("cn", 1, 960, 1)]]),
    "mobilenetv4_hybrid_medium": (32, nn.ReLU, True, [
        [("er", 3, 4, 48, 2)], [_u(3, 5, 4, 80, 2), _u(3, 3, 2, 80)],
        [_u(3, 5, 6, 160, 2), _u(0, 0, 2, 160), _u(3, 3, 4, 160), _u(3, 5, 4, 160), _MQA_M2, _u(3, 3, 4, 160),
         _MQA_M2, _u(3, 0, 4, 160), _MQA_M2, _u(3, 3, 4, 160), _MQA_M2, _u(3, 0, 4, 160)],
        [_u(5, 5, 6, 256, 2), _u(5, 5, 4, 256), _u(3, 5, 4, 256, n=2), _u(0, 0, 2, 256), _u(3, 5, 2, 256),
         _u(0, 0, 2, 256), _u(0, 0, 4, 256), _MQA_M3, _u(3, 0, 4, 256), _MQA_M3, _u(5, 5, 4, 256), _MQA_M3,
         _u(5, 0, 4, 256), _MQA_M3, _u(5, 0, 4, 256)],
        [("cn", 1, 960, 1)]]),
    "mobilenetv4_hybrid_large": (24, nn.GELU, True, [
        [("er", 3, 4, 48, 2)], [_u(3, 5, 4, 96, 2), _u(3, 3, 4, 96)],
        [_u(3, 5, 4, 192, 2), _u(3, 3, 4, 192, n=3), _u(3, 5, 4, 192), _u(5, 3, 4, 192, n=2), _MQA_L2,
         _u(5, 3, 4, 192), _MQA_L2, _u(5, 3, 4, 192), _MQA_L2, _u(5, 3, 4, 192), _MQA_L2, _u(3, 0, 4, 192)],
        [_u(5, 5, 4, 512, 2, n=4), _u(5, 0, 4, 512), _u(5, 3, 4, 512), _u(5, 0, 4, 512, n=2), _u(5, 3, 4, 512),
         _u(5, 5, 4, 512), _MQA_L3, _u(5, 0, 4, 512), _MQA_L3, _u(5, 0, 4, 512), _MQA_L3, _u(5, 0, 4, 512),
         _MQA_L3, _u(5, 0, 4, 512)],
        [("cn", 1, 960, 1)]]),
}


def timm_v4(name):
    stem, act, scale, stages = TIMM_V4[name]
    return _TimmMNv4(stem, stages, act, scale)
