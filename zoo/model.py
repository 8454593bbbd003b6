"""The common LM trunk every mixer plugs into.

embed -> n_layers x [norm -> mixer -> +residual, (norm -> mlp -> +residual)] -> norm -> tied head

``layers`` is a list of mixer specs (``{"name": ..., **hyper}``) cycled over the depth: one spec gives a
uniform stack, several give a hybrid (zoology's [short_conv, mixer] pairing, BASED's conv / linear attention /
sliding window interleave, "attention every k-th layer").

Packed rows: ``LM.forward(input_ids, seq_idx=...)`` hands the document index of every position to every mixer
(see zoo/blocks/base.py); MLPs are per token and need nothing.

Between layers: a mixer whose forward takes a ``cross_layer`` keyword gets one dict, fresh for each forward call
and shared by all layers in order, where a layer leaves per-token tensors for later layers (RWKV-7's value
residual: the first RWKV-7 layer's values). Mixers without the keyword never see it.

Memory placement: ``memory_layers`` (e.g. ``model.memory_layers=[1]``) lists the layers whose MLP carries its
memory (mlp=hpm); the other layers get the same MLP without it (hpm: its anchor SwiGLU). None: every layer.
"""
import functools
import inspect
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

import zoo.blocks  # noqa: F401  (registers every block)
from ops.packing import check_seq_idx
from zoo.blocks.base import Cache
from zoo.blocks.registry import MLPS, build_mixer, build_mlp
from zoo.checks import require_choice, require_positive_int
from zoo.user_modules import import_modules

NORMS = {"layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}
# parameters that write into the residual stream; rescaled by 1/sqrt(number of residual branches)
RESIDUAL_OUTPUT_NAMES = ("out_proj.weight", "down_proj.weight")


def _spec(spec, what: str) -> dict:
    if isinstance(spec, str):
        return {"name": spec}
    if isinstance(spec, Mapping) and "name" in spec:
        return dict(spec)
    raise ValueError(f"{what} must be a name or a mapping with a 'name' key, got {spec!r}")


@functools.lru_cache(maxsize=None)
def _keyword_inputs(mlp_class: type) -> frozenset | None:
    """The keyword inputs an MLP's forward accepts besides x; None when it takes **kwargs (it gets all)."""
    parameters = list(inspect.signature(mlp_class.forward).parameters.values())[2:]  # after self, x
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters)


@functools.lru_cache(maxsize=None)
def _takes_seq_idx(mixer_class: type) -> bool:
    parameters = inspect.signature(mixer_class.forward).parameters.values()
    return any(p.name == "seq_idx" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


@functools.lru_cache(maxsize=None)
def _takes_cross_layer(mixer_class: type) -> bool:
    return "cross_layer" in inspect.signature(mixer_class.forward).parameters


def _inputs_for(mlp: nn.Module, mlp_inputs: dict) -> dict:
    """Only the extras an MLP declares: a task may supply a memory path to a model whose MLPs take none."""
    accepted = _keyword_inputs(type(mlp))
    return mlp_inputs if accepted is None else {k: v for k, v in mlp_inputs.items() if k in accepted}


def _memory_placement(mlp: dict | None, memory_layers, n_layers: int) -> list[dict | None]:
    """The MLP spec of each layer: ``mlp`` in the layers listed in ``memory_layers`` (all when None), and in the
    others the same MLP without its memory (the class's ``without_memory(spec)``, e.g. hpm's anchor SwiGLU)."""
    if memory_layers is None:
        return [mlp] * n_layers
    if isinstance(memory_layers, (int, str)) or not isinstance(memory_layers, Sequence):
        raise ValueError(f"LM: memory_layers must be a list of layer indices in [0, {n_layers - 1}], "
                         f"got {memory_layers!r}")
    without = getattr(MLPS.get(mlp["name"]), "without_memory", None) if mlp else None
    if without is None:
        raise ValueError(f"LM: memory_layers places a memory MLP (e.g. mlp=hpm), but mlp is "
                         f"{mlp['name'] if mlp else None!r}, which has no memory")
    chosen = set()
    for index in memory_layers:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n_layers or index in chosen:
            raise ValueError(f"LM: memory_layers entry {index!r} is not a distinct layer index in "
                             f"[0, {n_layers - 1}] (n_layers={n_layers})")
        chosen.add(index)
    plain = without(mlp)
    return [mlp if i in chosen else plain for i in range(n_layers)]


class Layer(nn.Module):
    def __init__(self, d_model: int, layer_idx: int, mixer: dict, mlp: dict | None, norm: str):
        super().__init__()
        self.mixer_norm = NORMS[norm](d_model)
        self.mixer = build_mixer(d_model=d_model, layer_idx=layer_idx, **mixer)
        self.mlp_norm = NORMS[norm](d_model) if mlp else None
        self.mlp = build_mlp(d_model=d_model, **mlp) if mlp else None

    def forward(self, x: torch.Tensor, cache: Cache | None = None, seq_idx: torch.Tensor | None = None,
                cross_layer: dict | None = None, **mlp_inputs) -> torch.Tensor:
        # a mixer written before packing existed keeps working unpacked
        mixer_inputs = {} if seq_idx is None else {"seq_idx": seq_idx}
        if cross_layer is not None and _takes_cross_layer(type(self.mixer)):
            mixer_inputs["cross_layer"] = cross_layer
        x = x + self.mixer(self.mixer_norm(x), cache=cache, **mixer_inputs)
        if self.mlp is not None:
            # mlp_inputs lets an MLP take per-sequence extras (e.g. a memory path) without changing the trunk
            x = x + self.mlp(self.mlp_norm(x), **_inputs_for(self.mlp, mlp_inputs))
        return x


class LM(nn.Module):
    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2,
                 layers: Sequence = ({"name": "attention"},), mlp=None, norm: str = "layernorm",
                 backend: str | None = None, init_std: float = 0.02, memory_layers: Sequence[int] | None = None):
        super().__init__()
        require_positive_int("vocab_size", vocab_size, "LM")
        require_positive_int("d_model", d_model, "LM")
        require_positive_int("n_layers", n_layers, "LM")
        require_choice("norm", norm, tuple(NORMS), "LM")
        if isinstance(layers, (str, Mapping)):
            layers = [layers]
        specs = [_spec(s, "each entry of layers") for s in layers]
        if not specs:
            raise ValueError("LM: layers must name at least one mixer")
        if backend is not None:  # one switch for every layer, unless a spec sets its own
            specs = [{"backend": backend, **s} for s in specs]
        mlp = _spec(mlp, "mlp") if mlp else None
        mlps = _memory_placement(mlp, memory_layers, n_layers)
        self.vocab_size, self.d_model, self.n_layers = vocab_size, d_model, n_layers
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(
            Layer(d_model, i, specs[i % len(specs)], mlps[i], norm) for i in range(n_layers))
        self.final_norm = NORMS[norm](d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.embedding.weight  # tied
        self._init_weights(init_std, branches=n_layers * (2 if mlp else 1))

    def _init_weights(self, std: float, branches: int):
        nn.init.normal_(self.embedding.weight, std=std)
        # GPT-2 / mamba-ssm: keep the residual stream's variance independent of depth
        for name, param in self.named_parameters():
            if name.endswith(RESIDUAL_OUTPUT_NAMES):
                with torch.no_grad():
                    param.div_(math.sqrt(branches))

    def forward(self, input_ids: torch.Tensor, caches: list[Cache] | None = None, last_only: bool = False,
                seq_idx: torch.Tensor | None = None, **mlp_inputs) -> torch.Tensor:
        """input_ids (batch, seq) -> logits (batch, seq, vocab). With caches, prefill/decode and update them.

        last_only: logits of the last position only, (batch, 1, vocab): what a prefill before decoding needs,
        without the (batch, seq, vocab) tensor. seq_idx (batch, seq): packed rows, the document index of each
        position (non-decreasing); every document is then modelled as if it were alone. Not with caches.
        """
        if seq_idx is not None:
            self._check_packing(input_ids, caches, seq_idx)
        x = self.embedding(input_ids)
        cross_layer = {}  # what a layer leaves for later layers in this call (see the module docstring)
        for i, layer in enumerate(self.layers):
            x = layer(x, cache=None if caches is None else caches[i], seq_idx=seq_idx, cross_layer=cross_layer,
                      **mlp_inputs)
        if last_only:
            x = x[:, -1:]
        return self.head(self.final_norm(x))

    def _check_packing(self, input_ids: torch.Tensor, caches, seq_idx: torch.Tensor):
        if caches is not None:
            raise ValueError("LM: seq_idx (packed sequences) is for training and evaluation; it cannot be combined "
                             "with decoding caches")
        check_seq_idx(seq_idx, input_ids.shape[0], input_ids.shape[1], "LM")
        for i, layer in enumerate(self.layers):
            if not _takes_seq_idx(type(layer.mixer)):
                raise ValueError(f"LM: mixer {type(layer.mixer).__name__} (layer {i}) "
                                 "does not take seq_idx, so it cannot run packed sequences; add a seq_idx keyword "
                                 "to its forward (README, \"Adding a mixer\") or train without packing")

    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> list[Cache]:
        return [layer.mixer.allocate_cache(batch_size, device=device, dtype=dtype) for layer in self.layers]

    def state_size(self, seq_len: int) -> int:
        """Numbers per sequence that all mixers keep to decode the next token after seq_len tokens."""
        return sum(layer.mixer.state_size(seq_len) for layer in self.layers)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def size_report(self) -> dict:
        """Parameter counts: ``parameters`` (all), plus the sums of every block's own ``size_report()``.

        A memory reports ``bank`` (parameters stored, of which each context uses a part) and ``fetched`` (the
        part one context uses); then ``anchor`` = parameters - bank and ``active`` = anchor + fetched.
        """
        report = {"parameters": self.num_parameters()}
        for module in self.modules():
            if module is not self and callable(getattr(module, "size_report", None)):
                for key, value in module.size_report().items():
                    report[key] = report.get(key, 0) + value
        if "bank" in report:
            report["anchor"] = report["parameters"] - report["bank"]
            report["active"] = report["anchor"] + report.get("fetched", 0)
        return report

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, **mlp_inputs) -> torch.Tensor:
        """Prefill the prompt through every layer's cache, then decode one token at a time.

        temperature 0 is greedy; otherwise sample from softmax(logits / temperature), restricted to the top_k
        most likely tokens and/or the smallest set whose probability reaches top_p (nucleus sampling).
        mlp_inputs (e.g. a memory_path) go to every step. Returns (batch, prompt + max_new_tokens) token ids.
        """
        require_positive_int("max_new_tokens", max_new_tokens, "LM.generate")
        check_sampling(temperature, top_k, top_p)
        caches = self.allocate_cache(input_ids.shape[0], device=input_ids.device)
        logits = self(input_ids, caches=caches, last_only=True, **mlp_inputs)[:, -1]
        tokens = [input_ids]
        for step in range(max_new_tokens):
            next_token = _sample(logits, temperature, top_k, top_p, generator)
            tokens.append(next_token)
            if step + 1 < max_new_tokens:
                logits = self(next_token, caches=caches, **mlp_inputs)[:, -1]
        return torch.cat(tokens, dim=1)


def check_sampling(temperature: float, top_k: int | None, top_p: float | None):
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature!r}")
    if top_k is not None:
        require_positive_int("top_k", top_k, "sampling")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
            generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        # drop every token whose more likely predecessors already reach top_p (the most likely always stays)
        sorted_probs, order = logits.softmax(dim=-1).sort(dim=-1, descending=True)
        drop_sorted = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        drop = torch.empty_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)


def build_model(model_config: dict, imports=()) -> "LM":
    """The LM a config or checkpoint describes: model_config holds the LM keyword arguments, vocab_size included;
    ``imports`` are the user's modules whose mixers must be registered before the LM is built."""
    import_modules(imports)
    return LM(**model_config)
