"""The published Stable Diffusion component configs (the `config.json` files of the
SD1.5, SD2.x, SDXL, SD3.5 and FLUX.1 releases), so benchmarks and tests can build the real architectures with
random weights, or on the meta device, without downloading anything."""

# Shared by SD1.x and SD2.x.
_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    norm_num_groups=32,
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
    downsample_padding=1,
    act_fn="silu",
)
SD15_UNET = dict(_UNET, cross_attention_dim=768, attention_head_dim=8)
SD2_UNET = dict(
    _UNET, sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True
)

SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=512,
    scaling_factor=0.18215,
)

SD15_TEXT_ENCODER = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
# diffusers' SD2 text encoder keeps 23 of OpenCLIP ViT-H's 24 layers (SD2 reads the penultimate one).
SD2_TEXT_ENCODER = dict(
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=512,
)

SD15_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
)

# SDXL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0): no attention at the top level,
# 1, 2 and 10 transformer layers deeper down, and the pooled text embedding (1280) plus six
# micro-conditioning numbers (6 x 256) added to the time embedding: 1280 + 1536 = 2816.
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
    downsample_padding=1,
    act_fn="silu",
)
# SD's VAE architecture, retrained: its own scaling factor, and it overflows in fp16.
SDXL_VAE = dict(SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
# The first encoder is SD1.5's CLIP ViT-L; the second OpenCLIP ViT-bigG, with its projection
# (CLIPTextModelWithProjection), whose pooled output conditions the UNet.
SDXL_TEXT_ENCODER = SD15_TEXT_ENCODER
SDXL_TEXT_ENCODER_2 = dict(
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=1280,
)
SDXL_SCHEDULER = dict(  # EulerDiscreteScheduler
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    steps_offset=1,
    timestep_spacing="leading",
    prediction_type="epsilon",
)

# FLUX.1-dev (black-forest-labs/FLUX.1-dev's transformer/config.json): 19 double-stream and
# 38 single-stream blocks of width 3072, the guidance embedder (schnell: guidance_embeds False).
FLUX1_DEV_TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
# SD3.5 Large and Medium (stabilityai/stable-diffusion-3.5-large / -medium): MMDiT joint blocks;
# Medium adds a second self-attention (MMDiT-X) in its first 13 blocks.
SD35_LARGE_TRANSFORMER = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    num_layers=38,
    attention_head_dim=64,
    num_attention_heads=38,
    joint_attention_dim=4096,
    caption_projection_dim=2432,
    pooled_projection_dim=2048,
    out_channels=16,
    pos_embed_max_size=192,
    qk_norm="rms_norm",
)
SD35_MEDIUM_TRANSFORMER = dict(
    SD35_LARGE_TRANSFORMER,
    num_layers=24,
    num_attention_heads=24,
    caption_projection_dim=1536,
    pos_embed_max_size=384,
    dual_attention_layers=tuple(range(13)),
)
# The 16-channel VAE both use, without quant convs; each family its own scale and shift.
FLOW_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=16,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=1024,
    use_quant_conv=False,
    use_post_quant_conv=False,
)
FLUX_VAE = dict(FLOW_VAE, scaling_factor=0.3611, shift_factor=0.1159)
SD3_VAE = dict(FLOW_VAE, scaling_factor=1.5305, shift_factor=0.0609)
# T5 v1.1 XXL's encoder (google/t5-v1_1-xxl), FLUX's text_encoder_2 and SD3's text_encoder_3.
T5_XXL_ENCODER = dict(
    vocab_size=32128,
    d_model=4096,
    d_ff=10240,
    d_kv=64,
    num_heads=64,
    num_layers=24,
    feed_forward_proj="gated-gelu",
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
)
# SD3's CLIP-L is a CLIPTextModelWithProjection (its pooled output projected to 768).
SD3_TEXT_ENCODER = SD15_TEXT_ENCODER
SD3_TEXT_ENCODER_2 = SDXL_TEXT_ENCODER_2
FLUX_SCHEDULER = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
SD3_SCHEDULER = dict(shift=3.0)
