"""open_clip's model and pretrained-tag lists for one open_clip version, so that :func:`labeler.models.list_models`
needs no open_clip import (which pulls in torch, transformers and torchvision: seconds of the app's start-up).
Another installed version is asked directly. ``tests/test_models.py`` checks them against open_clip; to refresh,
print ``open_clip.list_models()`` (with Labeler's configs added) and ``open_clip.list_pretrained(as_str=True)``.
"""

from __future__ import annotations

#: The open_clip_torch version these lists are from.
VERSION = "3.3.0"
#: ``open_clip.list_models()`` with Labeler's configs added (``tiny-random``), in its order.
ARCHITECTURES = tuple(
    """
coca_base coca_roberta-ViT-B-32 coca_ViT-B-32 coca_ViT-L-14 convnext_base convnext_base_w convnext_base_w_320
convnext_large convnext_large_d convnext_large_d_320 convnext_small convnext_tiny convnext_xlarge
convnext_xxlarge convnext_xxlarge_320 EVA01-g-14 EVA01-g-14-plus EVA02-B-16 EVA02-E-14 EVA02-E-14-plus
EVA02-L-14 EVA02-L-14-336 MobileCLIP2-B MobileCLIP2-L-14 MobileCLIP2-S0 MobileCLIP2-S2 MobileCLIP2-S3
MobileCLIP2-S4 MobileCLIP-B MobileCLIP-S1 MobileCLIP-S2 mt5-base-ViT-B-32 mt5-xl-ViT-H-14 nllb-clip-base
nllb-clip-base-siglip nllb-clip-large nllb-clip-large-siglip PE-Core-B-16 PE-Core-bigG-14-448 PE-Core-L-14-336
PE-Core-S-16-384 PE-Core-T-16-384 RN50 RN50-quickgelu RN50x4 RN50x4-quickgelu RN50x16 RN50x16-quickgelu RN50x64
RN50x64-quickgelu RN101 RN101-quickgelu roberta-ViT-B-32 swin_base_patch4_window7_224 tiny-random ViT-B-16
ViT-B-16-plus ViT-B-16-plus-240 ViT-B-16-quickgelu ViT-B-16-SigLIP ViT-B-16-SigLIP2 ViT-B-16-SigLIP2-256
ViT-B-16-SigLIP2-384 ViT-B-16-SigLIP2-512 ViT-B-16-SigLIP-256 ViT-B-16-SigLIP-384 ViT-B-16-SigLIP-512
ViT-B-16-SigLIP-i18n-256 ViT-B-32 ViT-B-32-256 ViT-B-32-plus-256 ViT-B-32-quickgelu ViT-B-32-SigLIP2-256
ViT-bigG-14 ViT-bigG-14-CLIPA ViT-bigG-14-CLIPA-336 ViT-bigG-14-quickgelu ViT-bigG-14-worldwide
ViT-bigG-14-worldwide-378 ViT-e-14 ViT-g-14 ViT-gopt-16-SigLIP2-256 ViT-gopt-16-SigLIP2-384 ViT-H-14
ViT-H-14-378 ViT-H-14-378-quickgelu ViT-H-14-CLIPA ViT-H-14-CLIPA-336 ViT-H-14-quickgelu ViT-H-14-worldwide
ViT-H-14-worldwide-378 ViT-H-14-worldwide-quickgelu ViT-H-16 ViT-L-14 ViT-L-14-280 ViT-L-14-336
ViT-L-14-336-quickgelu ViT-L-14-CLIPA ViT-L-14-CLIPA-336 ViT-L-14-quickgelu ViT-L-14-worldwide
ViT-L-14-worldwide-quickgelu ViT-L-16 ViT-L-16-320 ViT-L-16-SigLIP2-256 ViT-L-16-SigLIP2-384
ViT-L-16-SigLIP2-512 ViT-L-16-SigLIP-256 ViT-L-16-SigLIP-384 ViT-M-16 ViT-M-16-alt ViT-M-32 ViT-M-32-alt
ViT-S-16 ViT-S-16-alt ViT-S-32 ViT-S-32-alt ViT-SO400M-14-SigLIP ViT-SO400M-14-SigLIP2 ViT-SO400M-14-SigLIP2-378
ViT-SO400M-14-SigLIP-378 ViT-SO400M-14-SigLIP-384 ViT-SO400M-16-SigLIP2-256 ViT-SO400M-16-SigLIP2-384
ViT-SO400M-16-SigLIP2-512 ViT-SO400M-16-SigLIP-i18n-256 vit_medium_patch16_gap_256
vit_relpos_medium_patch16_cls_224 ViTamin-B ViTamin-B-LTT ViTamin-L ViTamin-L2 ViTamin-L2-256 ViTamin-L2-336
ViTamin-L2-384 ViTamin-L-256 ViTamin-L-336 ViTamin-L-384 ViTamin-S ViTamin-S-LTT ViTamin-XL-256 ViTamin-XL-336
ViTamin-XL-384 xlm-roberta-base-ViT-B-32 xlm-roberta-large-ViT-H-14
""".split()
)
#: ``open_clip.list_pretrained(as_str=True)``, in its order.
PRETRAINED = tuple(
    """
RN50:openai RN50:yfcc15m RN50:cc12m RN101:openai RN101:yfcc15m RN50x4:openai RN50x16:openai RN50x64:openai
ViT-B-32:openai ViT-B-32:laion400m_e31 ViT-B-32:laion400m_e32 ViT-B-32:laion2b_e16 ViT-B-32:laion2b_s34b_b79k
ViT-B-32:datacomp_xl_s13b_b90k ViT-B-32:datacomp_m_s128m_b4k ViT-B-32:commonpool_m_clip_s128m_b4k
ViT-B-32:commonpool_m_laion_s128m_b4k ViT-B-32:commonpool_m_image_s128m_b4k ViT-B-32:commonpool_m_text_s128m_b4k
ViT-B-32:commonpool_m_basic_s128m_b4k ViT-B-32:commonpool_m_s128m_b4k ViT-B-32:datacomp_s_s13m_b4k
ViT-B-32:commonpool_s_clip_s13m_b4k ViT-B-32:commonpool_s_laion_s13m_b4k ViT-B-32:commonpool_s_image_s13m_b4k
ViT-B-32:commonpool_s_text_s13m_b4k ViT-B-32:commonpool_s_basic_s13m_b4k ViT-B-32:commonpool_s_s13m_b4k
ViT-B-32:metaclip_400m ViT-B-32:metaclip_fullcc ViT-B-32-256:datacomp_s34b_b86k ViT-B-16:openai
ViT-B-16:laion400m_e31 ViT-B-16:laion400m_e32 ViT-B-16:laion2b_s34b_b88k ViT-B-16:datacomp_xl_s13b_b90k
ViT-B-16:datacomp_l_s1b_b8k ViT-B-16:commonpool_l_clip_s1b_b8k ViT-B-16:commonpool_l_laion_s1b_b8k
ViT-B-16:commonpool_l_image_s1b_b8k ViT-B-16:commonpool_l_text_s1b_b8k ViT-B-16:commonpool_l_basic_s1b_b8k
ViT-B-16:commonpool_l_s1b_b8k ViT-B-16:dfn2b ViT-B-16:metaclip_400m ViT-B-16:metaclip_fullcc
ViT-B-16-plus-240:laion400m_e31 ViT-B-16-plus-240:laion400m_e32 ViT-L-14:openai ViT-L-14:laion400m_e31
ViT-L-14:laion400m_e32 ViT-L-14:laion2b_s32b_b82k ViT-L-14:datacomp_xl_s13b_b90k
ViT-L-14:commonpool_xl_clip_s13b_b90k ViT-L-14:commonpool_xl_laion_s13b_b90k ViT-L-14:commonpool_xl_s13b_b90k
ViT-L-14:metaclip_400m ViT-L-14:metaclip_fullcc ViT-L-14:dfn2b ViT-L-14:dfn2b_s39b ViT-L-14-336:openai
ViT-H-14:laion2b_s32b_b79k ViT-H-14:metaclip_fullcc ViT-H-14:metaclip_altogether ViT-H-14:dfn5b
ViT-H-14-378:dfn5b ViT-g-14:laion2b_s12b_b42k ViT-g-14:laion2b_s34b_b88k ViT-bigG-14:laion2b_s39b_b160k
ViT-bigG-14:metaclip_fullcc roberta-ViT-B-32:laion2b_s12b_b32k xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k
xlm-roberta-large-ViT-H-14:frozen_laion5b_s13b_b90k convnext_base:laion400m_s13b_b51k
convnext_base_w:laion2b_s13b_b82k convnext_base_w:laion2b_s13b_b82k_augreg
convnext_base_w:laion_aesthetic_s13b_b82k convnext_base_w_320:laion_aesthetic_s13b_b82k
convnext_base_w_320:laion_aesthetic_s13b_b82k_augreg convnext_large_d:laion2b_s26b_b102k_augreg
convnext_large_d_320:laion2b_s29b_b131k_ft convnext_large_d_320:laion2b_s29b_b131k_ft_soup
convnext_xxlarge:laion2b_s34b_b82k_augreg convnext_xxlarge:laion2b_s34b_b82k_augreg_rewind
convnext_xxlarge:laion2b_s34b_b82k_augreg_soup coca_ViT-B-32:laion2b_s13b_b90k
coca_ViT-B-32:mscoco_finetuned_laion2b_s13b_b90k coca_ViT-L-14:laion2b_s13b_b90k
coca_ViT-L-14:mscoco_finetuned_laion2b_s13b_b90k EVA01-g-14:laion400m_s11b_b41k
EVA01-g-14-plus:merged2b_s11b_b114k EVA02-B-16:merged2b_s8b_b131k EVA02-L-14:merged2b_s4b_b131k
EVA02-L-14-336:merged2b_s6b_b61k EVA02-E-14:laion2b_s4b_b115k EVA02-E-14-plus:laion2b_s9b_b144k
ViT-B-16-SigLIP:webli ViT-B-16-SigLIP-256:webli ViT-B-16-SigLIP-i18n-256:webli ViT-B-16-SigLIP-384:webli
ViT-B-16-SigLIP-512:webli ViT-L-16-SigLIP-256:webli ViT-L-16-SigLIP-384:webli ViT-SO400M-14-SigLIP:webli
ViT-SO400M-16-SigLIP-i18n-256:webli ViT-SO400M-14-SigLIP-378:webli ViT-SO400M-14-SigLIP-384:webli
ViT-B-32-SigLIP2-256:webli ViT-B-16-SigLIP2:webli ViT-B-16-SigLIP2-256:webli ViT-B-16-SigLIP2-384:webli
ViT-B-16-SigLIP2-512:webli ViT-L-16-SigLIP2-256:webli ViT-L-16-SigLIP2-384:webli ViT-L-16-SigLIP2-512:webli
ViT-SO400M-14-SigLIP2:webli ViT-SO400M-14-SigLIP2-378:webli ViT-SO400M-16-SigLIP2-256:webli
ViT-SO400M-16-SigLIP2-384:webli ViT-SO400M-16-SigLIP2-512:webli ViT-gopt-16-SigLIP2-256:webli
ViT-gopt-16-SigLIP2-384:webli ViT-L-14-CLIPA:datacomp1b ViT-L-14-CLIPA-336:datacomp1b ViT-H-14-CLIPA:datacomp1b
ViT-H-14-CLIPA-336:laion2b ViT-H-14-CLIPA-336:datacomp1b ViT-bigG-14-CLIPA:datacomp1b
ViT-bigG-14-CLIPA-336:datacomp1b nllb-clip-base:v1 nllb-clip-large:v1 nllb-clip-base-siglip:v1
nllb-clip-base-siglip:mrl nllb-clip-large-siglip:v1 nllb-clip-large-siglip:mrl MobileCLIP-S1:datacompdr
MobileCLIP-S2:datacompdr MobileCLIP-B:datacompdr MobileCLIP-B:datacompdr_lt MobileCLIP2-B:dfndr2b
MobileCLIP2-S0:dfndr2b MobileCLIP2-S2:dfndr2b MobileCLIP2-S3:dfndr2b MobileCLIP2-S4:dfndr2b
MobileCLIP2-L-14:dfndr2b ViTamin-S:datacomp1b ViTamin-S-LTT:datacomp1b ViTamin-B:datacomp1b
ViTamin-B-LTT:datacomp1b ViTamin-L:datacomp1b ViTamin-L-256:datacomp1b ViTamin-L-336:datacomp1b
ViTamin-L-384:datacomp1b ViTamin-L2:datacomp1b ViTamin-L2-256:datacomp1b ViTamin-L2-336:datacomp1b
ViTamin-L2-384:datacomp1b ViTamin-XL-256:datacomp1b ViTamin-XL-336:datacomp1b ViTamin-XL-384:datacomp1b
PE-Core-T-16-384:meta PE-Core-S-16-384:meta PE-Core-B-16:meta PE-Core-L-14-336:meta PE-Core-bigG-14-448:meta
ViT-H-14-worldwide:metaclip2_worldwide ViT-H-14-worldwide-378:metaclip2_worldwide
ViT-bigG-14-worldwide:metaclip2_worldwide ViT-bigG-14-worldwide-378:metaclip2_worldwide RN50-quickgelu:openai
RN50-quickgelu:yfcc15m RN50-quickgelu:cc12m RN101-quickgelu:openai RN101-quickgelu:yfcc15m
RN50x4-quickgelu:openai RN50x16-quickgelu:openai RN50x64-quickgelu:openai ViT-B-32-quickgelu:openai
ViT-B-32-quickgelu:laion400m_e31 ViT-B-32-quickgelu:laion400m_e32 ViT-B-32-quickgelu:metaclip_400m
ViT-B-32-quickgelu:metaclip_fullcc ViT-B-16-quickgelu:openai ViT-B-16-quickgelu:dfn2b
ViT-B-16-quickgelu:metaclip_400m ViT-B-16-quickgelu:metaclip_fullcc ViT-L-14-quickgelu:openai
ViT-L-14-quickgelu:metaclip_400m ViT-L-14-quickgelu:metaclip_fullcc ViT-L-14-quickgelu:dfn2b
ViT-L-14-336-quickgelu:openai ViT-H-14-quickgelu:metaclip_fullcc ViT-H-14-quickgelu:dfn5b
ViT-H-14-378-quickgelu:dfn5b ViT-bigG-14-quickgelu:metaclip_fullcc
ViT-H-14-worldwide-quickgelu:metaclip2_worldwide
""".split()
)
