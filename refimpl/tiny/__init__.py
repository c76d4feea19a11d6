"""The course's tiny model: patches -> encoder -> Perceiver Resampler -> head (notebooks 6-10).

    model        the NumPy forward, the parameters, the shipped trained model (load_pretrained)
    torch        the same function as a trainable nn.Module (TinyModel)
    train        the training loop, held-out scenes and accuracy (PyTorch)
    grad         the NumPy backward for the training loss (notebook 10)
    diagnostics  what the attention maps show, in numbers (notebook 7)
    poolers      the resampler's rivals for the ablation (notebook 8)
    ablation     the ablation itself: every pooler on the same data, steps and seeds (notebook 8)
    budget       what a language model pays per text token to read N patches or R tokens (notebook 9)

Only `model`, `grad`, `diagnostics` and `budget` are NumPy only; the others import torch.
"""
