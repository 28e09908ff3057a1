"""Tiny real models for tests, notebooks and benchmarks: a few layers and a tokenizer
trained on the fly, so a training runs in seconds on a CPU with nothing downloaded."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]


def make_talkative_model(path: str | Path) -> Path:
    """The tiny model with larger random weights (normal, std 0.3, seed 0): at its initial weights
    the tiny model only says newlines (empty answers), which would let answers in the wrong order,
    or a benchmark with nothing to count, go unnoticed."""
    import torch
    from transformers import AutoModelForCausalLM

    path = make_tiny_model(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0, 0.3, generator=generator)
    model.save_pretrained(path)
    return path


def make_tiny_model(path: str | Path, texts: list[str] | None = None, *, hidden_size: int = 32,
                    layers: int = 2, vocab_size: int = 400, seed: int = 0) -> Path:
    """Write a tiny Llama causal LM with a ChatML tokenizer to `path` and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from .demo_data import demo_gsm_rows, demo_sft_rows

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if texts is None:
        texts = [" ".join(str(v) for v in row.values()) for row in demo_sft_rows() + demo_gsm_rows()]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(texts + ["user assistant system"], trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", unk_token="<unk>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_sd_pipeline(path: str | Path, *, seed: int = 0, resolution: int = 32) -> Path:
    """Write a tiny Stable Diffusion 1.x pipeline to `path`: a UNet of ~800k parameters, a small VAE,
    a 2-layer CLIP text encoder and a character-level CLIP tokenizer, all made here (no download)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    path = Path(path)
    torch.manual_seed(seed)
    characters = list(bytes_to_unicode().values())
    vocab = {token: index for index, token in enumerate(characters + [c + "</w>" for c in characters]
                                                         + ["<|startoftext|>", "<|endoftext|>"])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=32, projection_dim=32, bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]))
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=resolution // 2, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        norm_num_groups=32, sample_size=resolution)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, steps_offset=1, clip_sample=False)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.save_pretrained(path)
    return path


def make_tiny_sdxl_pipeline(path: str | Path, *, seed: int = 0, resolution: int = 32) -> Path:
    """Write a tiny SDXL pipeline to `path` (two CLIP text encoders, a UNet with SDXL's size and
    time conditioning), made here like `make_tiny_sd_pipeline`. SimpleTuner's SD 1.x/2.x path cannot
    build its pipeline without a safety checker (4.x), its SDXL path can: the SimpleTuner tests use this."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    path = Path(path)
    torch.manual_seed(seed)
    characters = list(bytes_to_unicode().values())
    vocab = {token: index for index, token in enumerate(characters + [c + "</w>" for c in characters]
                                                         + ["<|startoftext|>", "<|endoftext|>"])}
    text_config = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=77,  # SDXL's 77 tokens
                       projection_dim=32,
                       bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                       pad_token_id=vocab["<|endoftext|>"])
    tokenizers = [CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77) for _ in range(2)]
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=resolution // 2, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six size/crop numbers + the pooled text
        cross_attention_dim=64, norm_num_groups=32)  # both encoders' hidden states, side by side
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        norm_num_groups=32, sample_size=resolution, scaling_factor=0.13025)
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                       beta_end=0.012, steps_offset=1, timestep_spacing="leading")
    pipeline = StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**text_config)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text_config)), tokenizer=tokenizers[0],
        tokenizer_2=tokenizers[1], unet=unet, scheduler=scheduler)
    pipeline.save_pretrained(path)
    return path


def make_tiny_embedding_model(path: str | Path, texts: list[str] | None = None, *, hidden_size: int = 32,
                              layers: int = 2, vocab_size: int = 600, seed: int = 0) -> Path:
    """Write a tiny BERT sentence-transformers model (WordPiece tokenizer trained on `texts`, mean
    pooling) to `path` and return it: the embedding demo's stand-in for all-MiniLM-L6-v2."""
    import torch
    from sentence_transformers.sentence_transformer import SentenceTransformer
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from .embeddings import demo_embed_rows

    path = Path(path)
    if texts is None:
        texts = [row["query"] + " " + row["passage"] for row in demo_embed_rows()]
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    backend.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tokenizer = BertTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
                        num_attention_heads=4, intermediate_size=hidden_size * 2, max_position_embeddings=128)
    raw = path.with_name(path.name + ".hf")
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    SentenceTransformer(str(raw), device="cpu").save(str(path))  # Transformer + mean pooling
    return path


VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>{% endgeneration %}\n"
    "{% else %}{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _vl_tokenizer(path: Path, special_tokens: list[str], *, hidden_size: int, seed: int):
    """A tokenizer trained on the demo's questions and answers (a tiny text model beside `path`), with
    a VL model's special tokens added."""
    from transformers import AutoTokenizer

    from .vision_language import COLOURS, QUESTIONS, SHAPES

    texts = list(QUESTIONS.values()) + list(SHAPES) + list(COLOURS) + ["user assistant system"]
    text_dir = make_tiny_model(path.with_name(path.name + ".text"), texts * 20, hidden_size=hidden_size,
                               vocab_size=300, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(text_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": special_tokens})
    return tokenizer


def make_tiny_vl_model(path: str | Path, *, hidden_size: int = 32, image_size: int = 32, patch_size: int = 8,
                       seed: int = 0) -> Path:
    """Write a tiny LLaVA (a CLIP vision tower + a small Llama) with its processor to `path`, built
    offline: `CLIPImageProcessorPil` (no torchvision) and a ChatML template with `{% generation %}`
    markers, so TRL can train on the assistant's answers only."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    path = Path(path)
    tokenizer = _vl_tokenizer(path, ["<image>"], hidden_size=hidden_size, seed=seed)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                            crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                               vision_feature_select_strategy="default", chat_template=VL_CHAT_TEMPLATE,
                               num_additional_image_tokens=1)  # CLIP's CLS token
    torch.manual_seed(seed)
    text_config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                              initializer_range=0.2)  # wide enough that LoRA alone can make confident answers
    vision_config = CLIPVisionConfig(hidden_size=hidden_size, intermediate_size=hidden_size * 2, num_hidden_layers=2,
                                     num_attention_heads=4, image_size=image_size, patch_size=patch_size,
                                     projection_dim=hidden_size)
    config = LlavaConfig(vision_config=vision_config, text_config=text_config,
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-1,
                         projector_hidden_act="gelu", tie_word_embeddings=True)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def make_tiny_idefics3_model(path: str | Path, *, hidden_size: int = 32, image_size: int = 32, patch_size: int = 8,
                             seed: int = 0) -> Path:
    """Write a tiny random-weight Idefics3 (SmolVLM's architecture: SigLIP vision tower, pixel shuffle,
    Llama) with its processor to `path`, built offline with `Idefics3ImageProcessorPil` (no torchvision),
    one image tile (no splitting) and the `{% generation %}` ChatML template."""
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    path = Path(path)
    tokenizer = _vl_tokenizer(path, ["<image>", "<fake_token_around_image>", "<global-img>"],
                              hidden_size=hidden_size, seed=seed)
    scale_factor = 2
    image_seq_len = (image_size // patch_size) ** 2 // scale_factor ** 2
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": image_size * 2},
                                                max_image_size={"longest_edge": image_size}, do_image_splitting=False)
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  chat_template=VL_CHAT_TEMPLATE, image_seq_len=image_seq_len)
    torch.manual_seed(seed)
    config = Idefics3Config(
        text_config={"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": hidden_size,
                     "intermediate_size": hidden_size * 2, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "max_position_embeddings": 256, "initializer_range": 0.2,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": hidden_size, "intermediate_size": hidden_size * 2, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": image_size, "patch_size": patch_size},
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=scale_factor,
        tie_word_embeddings=True)
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def make_tiny_qwen2vl_model(path: str | Path, *, version: str = "2", hidden_size: int = 32, image_size: int = 32,
                            patch_size: int = 8, seed: int = 0) -> Path:
    """Write a tiny random-weight Qwen2-VL (`version="2"`) or Qwen2.5-VL (`"2.5"`) with its processor to
    `path`, built offline: `Qwen2VLImageProcessorPil` sized so a 32x32 picture is 16 patches (4 tokens
    after the 2x2 merge), Qwen's vision tokens in the `{% generation %}` ChatML template. Its processor
    class builds a video processor that needs torchvision: `runtime.vision_language.load_processor` leaves it out."""
    import torch
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if version == "2":
        from transformers import Qwen2VLConfig as Config
        from transformers import Qwen2VLForConditionalGeneration as Model
        vision = {"embed_dim": hidden_size, "mlp_ratio": 2}
    elif version == "2.5":
        from transformers import Qwen2_5_VLConfig as Config
        from transformers import Qwen2_5_VLForConditionalGeneration as Model
        vision = {"intermediate_size": hidden_size * 2, "out_hidden_size": hidden_size, "fullatt_block_indexes": [1],
                  "window_size": image_size}
    else:
        raise ValueError(f"version must be '2' or '2.5', not {version!r}")
    path = Path(path)
    tokenizer = _vl_tokenizer(path, ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
                              hidden_size=hidden_size, seed=seed)
    template = VL_CHAT_TEMPLATE.replace("<image>", "<|vision_start|><|image_pad|><|vision_end|>")
    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessorPil(patch_size=patch_size, merge_size=2, temporal_patch_size=2,
                                               size={"shortest_edge": pixels, "longest_edge": pixels})
    torch.manual_seed(seed)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    head_dim = hidden_size // 4
    config = Config(
        text_config={"vocab_size": len(tokenizer), "hidden_size": hidden_size, "intermediate_size": hidden_size * 2,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "max_position_embeddings": 256, "initializer_range": 0.2,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                         "mrope_section": [head_dim // 4, head_dim // 8, head_dim // 8]},
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={"depth": 2, "hidden_size": hidden_size, "num_heads": 4, "patch_size": patch_size,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, **vision},
        tie_word_embeddings=True, **ids)
    model = Model(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    image_processor.save_pretrained(path)
    (path / "chat_template.jinja").write_text(template)
    return path
