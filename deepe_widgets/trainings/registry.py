"""The registry of training types and the base class every type derives from (see the package's
docstring). Types register themselves when `deepe_widgets.trainings` imports them."""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

from .. import config, methods, metrics, models, provenance, runtime, store
from .. import params as paramlib
from ..config import StageName, TrainingTypeName
from ..errors import DeepeError
from ..kernels import kernel_environment
from ..runtime import devices
from ..store import ModelKind

# the fields a dataset check may name that a form shows as column choosers, beside the dataset
DATASET_FIELDS = ("dataset", "PromptInputColumn", "PromptOutputColumn", "PromptRejectedColumn", "NegativeColumn")


class TrainingType:
    """One training type. Subclasses override what differs; the defaults are those of chat."""

    name = "chat"
    # the methods' `training_type` this type serves (config.TRAINING_TYPES); a method named in `methods`
    # belongs here whatever its training_type says (DPO-Demo is a chat method trained on pairs)
    training_type = TrainingTypeName.CHAT
    methods: tuple[str, ...] = ()
    demo_dataset = "demo-sft"
    # the base models it trains, in words: what a method of it needs, and what a model of it is
    needs_model = "a chat model (a text generator such as SmolLM2)"
    model_is = "a text-only chat model"
    # the base model Start a New Train picks with a method of this type (None: the first it takes)
    default_base_model: str | None = models.DEFAULT_BASE_MODEL
    # what the column choosers of Start a New Train read when left unset
    standard_columns = "instruction/output or question/answer"
    inference_folder = "hf_common"  # under method_templates/: the notebook a base model of this type answers with
    inference_defaults: dict = {}  # values of its inference stage, below what the user gives
    takes_image = False  # its models answer about an image (`deepe infer --image`)
    # its evaluation stage's built-in notebook, under method_templates/ (None: none yet), and its suites
    evaluation_file: str | None = "evaluation/chat.ipynb"
    suites: tuple[str, ...] = ("generation", "benchmark", "judge")
    default_suite = "generation"
    # the training's parameters its evaluation stage is given too, so it scores as the training did
    evaluation_parameters: tuple[str, ...] = ()
    # the metrics it logs whose better direction the name rule (metrics.direction) would not guess
    metric_directions: dict[str, str] = {}
    # the config class (module.Class) each of its methods builds its trainer with: the keys of a
    # training's extra arguments (EXTRA_ARGS) are checked against its fields
    config_classes: dict[str, str] = {}
    # its models score a prompt with an answer (their inference stage's ANSWERS) and generate nothing:
    # Try it asks for the answer, and they are not deployed (vLLM serves generation)
    scores_answers = False
    score_meaning = ""  # what a score says, in words, after "score 0.44: "
    # how its models are evaluated where no suite applies, in words ("" : no suite yet)
    evaluated_while_training = ""

    # why its methods never load the base model in 4 bits ("" : LOAD_IN_4BIT loads it with bitsandbytes)
    no_four_bit = ""

    # which type is asked first, the highest first (a diffusers pipeline is recognized before a vision
    # tower, a vision tower before an embedding model's folder); among equals the newest registered
    order = 0

    def check_available(self, method: str) -> None:
        """Refuse, before the method is looked up, a training that cannot run here (SimpleTuner)."""

    def recognizes(self, model_row: store.ModelRecord) -> bool:
        """Whether a base model is one of this type's (for answering with it before training)."""
        return False

    def checks_data(self, method_row: store.Method) -> bool:
        """Whether a training of `method_row` gets the dataset check: the built-ins read their columns
        the standard way; a user's method reads them as it likes."""
        return method_row.name in methods.BUILTINS or method_row.name in self.methods

    def checks_model(self, method_row: store.Method) -> bool:
        """Whether a training of `method_row` gets the base-model check: the built-ins and every method
        of a type other than chat (a user's chat method may train any text model its code loads)."""
        return self.checks_data(method_row) or self.training_type != TrainingTypeName.CHAT

    def takes_model(self, model_row: store.ModelRecord) -> bool:
        """Whether this type trains `model_row`: the type that recognizes it (`for_model`) is of its kind."""
        return for_model(model_row).training_type == self.training_type

    def base_models(self) -> list[str]:
        """The registered base models this type trains, its default first."""
        names = [m.name for m in models.list_models("base") if self.takes_model(m)]
        if self.default_base_model == models.DEFAULT_BASE_MODEL and models.DEFAULT_BASE_MODEL not in names:
            names.append(models.DEFAULT_BASE_MODEL)  # the embedded default, imported on first use
        return sorted(names, key=lambda name: name != self.default_base_model)

    def check_base_model(self, model_row: store.ModelRecord, method: str = "") -> None:
        """Refuse a base model this type cannot train, saying what it needs and what to choose instead
        ("SFT-Demo needs a chat model …; all-MiniLM-L6-v2 is an embedding model")."""
        if self.takes_model(model_row):
            return
        fitting = self.base_models()
        instead = (f"Choose {' or '.join(fitting[:3])} instead" if fitting else
                   "None is registered yet: add one with deepe models add NAME FOLDER")
        raise DeepeError(f"{method or 'this method'} needs {self.needs_model}; {model_row.name} is "
                         f"{for_model(model_row).model_is}. {instead}.", field="base_model")

    def check_dataset(self, method_row: store.Method, model_row: store.ModelRecord,
                      dataset_row: store.DatasetRecord, values: dict) -> None:
        """Refuse a dataset this type cannot train on (`values`: every parameter, defaults included)."""
        from .. import datasets

        datasets.check_columns(dataset_row, values.get("PromptInputColumn", ""), values.get("PromptOutputColumn", ""))

    def problems(self, method_row: store.Method, model_row: store.ModelRecord | None,
                 dataset_row: store.DatasetRecord | None, values: dict) -> list[DeepeError]:
        """Every refusal of `check_training` at once (the base model's and the dataset's), for a form
        that shows each by its field; None skips that check."""
        found = []
        if model_row is not None and model_row.kind == ModelKind.BASE and self.checks_model(method_row):
            try:
                self.check_base_model(model_row, method_row.name)
            except DeepeError as exc:
                found.append(exc)
        if dataset_row is not None and self.checks_data(method_row):
            full = {**{k: paramlib.default_value(v) for k, v in method_row.default_params.items()}, **values}
            try:
                self.check_dataset(method_row, model_row, dataset_row, full)
            except DeepeError as exc:
                demo = demo_dataset(method_row.name)
                if demo and demo != dataset_row.name and exc.field in DATASET_FIELDS:
                    exc = DeepeError(f"{exc.message} — or choose {demo}, the demo dataset made for "
                                     f"{method_row.name}", field=exc.field)
                found.append(exc)
        return found

    def check_extra_args(self, method_row: store.Method, values: dict) -> None:
        """Refuse extra arguments (`values["EXTRA_ARGS"]`) the method cannot take: a method whose training
        has no EXTRA_ARGS parameter, a key that is one of its parameters or set by the platform, and a
        key its config class (`config_classes`) has no field for, naming the closest one."""
        extras = next((value for key, value in values.items()  # any spelling: a copy's keys are lower case
                       if paramlib.normalise(key) == paramlib.normalise(paramlib.EXTRA_ARGS)), None)
        if not extras:
            return
        if paramlib.EXTRA_ARGS not in method_row.default_params:
            raise DeepeError(f"method {method_row.name!r} takes no extra arguments: its training stage has no "
                             f"{paramlib.EXTRA_ARGS} parameter", field=paramlib.EXTRA_ARGS)
        if not isinstance(extras, dict):
            return  # a script's flags as text (--param extra_args="--packing true"): its parser checks them
        paramlib.check_extra_arg_names(extras, method_row.default_params)
        config_class = _import_config_class(self.config_classes.get(method_row.name))
        if config_class is None:
            return
        unknown = runtime.unknown_extra_args(config_class, extras)
        if unknown:
            key, closest = next(iter(unknown.items()))
            raise DeepeError(runtime.unknown_extra_arg_message(key, closest, config_class),
                             field=paramlib.EXTRA_ARGS)

    def check_training(self, method_row: store.Method, model_row: store.ModelRecord,
                       dataset_row: store.DatasetRecord, values: dict) -> None:
        """The checks `jobs.submit_training` runs: the base model, then the dataset, then what the
        training's kernel cannot do (`check_device`)."""
        found = self.problems(method_row, model_row, dataset_row, values)
        if found:
            raise found[0]
        self.check_extra_args(method_row, values)
        self.check_device(method_row, values)

    def check_device(self, method_row: store.Method, values: dict) -> None:
        """Refuse, at submit, a choice the training's kernel cannot honour, in one sentence by its
        field: LOAD_IN_4BIT without a CUDA GPU or bitsandbytes (`devices.four_bit_problem`), USE_VLLM
        without a CUDA GPU or vllm. The kernel is probed only when one of them is asked for."""
        full = {**{k: paramlib.default_value(v) for k, v in method_row.default_params.items()}, **values}
        wants_four_bit = full.get("LOAD_IN_4BIT") is True and "LOAD_IN_4BIT" in method_row.default_params
        wants_vllm = full.get("USE_VLLM") is True and "USE_VLLM" in method_row.default_params
        if wants_four_bit and self.no_four_bit and method_row.builtin:
            raise DeepeError(f"{method_row.name} does not load in 4-bit ({self.no_four_bit}): "
                             f"leave LOAD_IN_4BIT off", field="LOAD_IN_4BIT")
        if wants_four_bit and "mlx-lm" in methods.stage_requirements(method_row):
            wants_four_bit = False  # MLX quantises itself, on any machine MLX runs on
        if not (wants_four_bit or wants_vllm):
            return
        device, packages = kernel_device(method_row)
        if wants_four_bit:
            problem = devices.four_bit_problem(device, bool(packages.get("bitsandbytes")))
            if problem:
                raise DeepeError(problem, field="LOAD_IN_4BIT")
        if wants_vllm:
            problem = devices.vllm_problem(device, bool(packages.get("vllm")))
            if problem:
                raise DeepeError(problem, field="USE_VLLM")

    def evaluation_notebook(self) -> Path | None:
        """The built-in notebook of its `evaluation` stage (a method's own overrides it)."""
        return config.package_templates_dir() / self.evaluation_file if self.evaluation_file else None

    def inference_notebook(self, model_row: store.ModelRecord) -> Path:
        """The notebook a base model of this type answers with."""
        return config.package_templates_dir() / self.inference_folder / "inference.ipynb"


def kernel_device(method_row: store.Method) -> tuple[devices.Device, dict]:
    """The device the training stage's kernel would train on (`provenance.probe_device`: nvidia-smi,
    not torch) and its packages' versions (`kernels.kernel_environment`)."""
    kernel = methods.stage_of(method_row, StageName.TRAINING).kernel
    found = kernel_environment(kernel)
    if found.get("probe_error"):
        raise DeepeError(f"could not read the packages of kernel {kernel!r}: {found['probe_error']}", field="method")
    packages = found.get("packages") or {}
    probed = provenance.probe_device(packages.get("torch"))
    return devices.Device(type=probed["type"], name=probed.get("name"), count=probed.get("count") or 0), packages


@functools.cache
def _import_config_class(dotted: str | None):
    """`"trl.SFTConfig"` -> the class; None where none is named or it does not import here (the kernel's
    `runtime.config_with_extras` checks the keys when the training runs)."""
    if not dotted:
        return None
    module, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def config_class(method: store.Method | str) -> str | None:
    """The config class a method's trainer is built with ("trl.SFTConfig"), or None."""
    name = method if isinstance(method, str) else method.name
    return for_method(method).config_classes.get(name)


_TYPES: dict[str, TrainingType] = {}


def register(training: TrainingType) -> TrainingType:
    """Add (or replace) a training type; the newest registered is asked first."""
    _TYPES.pop(training.name, None)
    _TYPES[training.name] = training
    return training


def unregister(name: str) -> None:
    """Remove a training type (a test's toy type)."""
    _TYPES.pop(name, None)


def all_types() -> list[TrainingType]:
    """Every training type in the order they are asked (`TrainingType.order`, then the newest first)."""
    return sorted(reversed(_TYPES.values()), key=lambda training: -training.order)


def for_method(method: store.Method | str) -> TrainingType:
    """The type of a method (a row or a name): the type that names it, else the one of its
    training_type. A name no type claims is looked up (`methods.get_method`, NotFound if unknown)."""
    name = method if isinstance(method, str) else method.name
    for training in all_types():
        if name in training.methods:
            return training
    if isinstance(method, str) and method in methods.BUILTINS:  # known before it is registered
        training_type = methods.BUILTINS[method].training_type
    else:
        training_type = (methods.get_method(method) if isinstance(method, str) else method).training_type
    for training in all_types():
        if not training.methods and training.training_type == training_type:
            return training
    return _TYPES["chat"]


def for_model(model_row: store.ModelRecord) -> TrainingType:
    """The type of a model: its method's, or for a base model the first type that recognizes it."""
    if model_row.kind != ModelKind.BASE and model_row.method:
        return for_method(model_row.method)
    return next((t for t in all_types() if t.recognizes(model_row)), _TYPES["chat"])


def demo_dataset(method: str) -> str | None:
    """The demo dataset a built-in method comes with (each built-in names its own in
    `methods.BUILTINS`; one registered where it can run, SimpleTuner, takes its type's); None for a
    user's method."""
    if method in methods.BUILTINS:
        return methods.BUILTINS[method].demo_dataset
    row = store.get_one(store.Method, name=method)
    if row is None or not row.builtin:
        return None
    return for_method(row).demo_dataset


def metric_directions(method: store.Method | None) -> dict[str, str]:
    """The better direction of the metrics a method's trainings log, that `metrics.direction` takes
    as `declared`: its type's, overridden by its training notebook's own (`metrics.method_directions`,
    which asks this registry for the type's: the CLI's "best" and the widgets' agree)."""
    return metrics.method_directions(method)


def _type_directions(method: store.Method) -> dict[str, str]:
    return dict(for_method(method).metric_directions)


metrics.use_type_directions(_type_directions)
