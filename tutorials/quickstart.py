"""Quick start, offline: explain the shipped sentiment model with MambaLRP and Captum.

Run: python tutorials/quickstart.py   (writes quickstart_heatmap.png and .html next to the cwd)
"""

from __future__ import annotations

import torch
from captum.attr import LayerIntegratedGradients

from captum_mamba import LayerMambaLRP
from captum_mamba.default import LABELS, SAMPLE_SENTENCES, encode, load_default_classifier
from captum_mamba.visualization import TokenExplanation, heatmap_html, save_heatmap


def main() -> None:
    model, tokenizer = load_default_classifier(dtype=torch.float64)
    input_ids, mask = encode(tokenizer, SAMPLE_SENTENCES)
    predicted = model(input_ids=input_ids, attention_mask=mask).logits.argmax(-1)

    mamba_lrp = LayerMambaLRP(model, model.backbone.embeddings)
    relevance, delta = mamba_lrp.attribute(
        input_ids, target=predicted, additional_forward_args=mask, return_convergence_delta=True
    )
    # The same call with Captum's Integrated Gradients, for comparison:
    ig = LayerIntegratedGradients(
        lambda ids, m: model(input_ids=ids, attention_mask=m).logits, model.backbone.embeddings
    )
    ig_relevance = ig.attribute(input_ids, target=predicted, additional_forward_args=mask, n_steps=32)

    rows = []
    for i, text in enumerate(SAMPLE_SENTENCES):
        n = int(mask[i].sum())
        tokens = [tokenizer.id_to_token(t) for t in input_ids[i, :n].tolist()]
        print(f"{text!r} -> {LABELS[predicted[i]]}, convergence delta {delta[i]:.1e}")
        rows.append(TokenExplanation(tokens, relevance[i, :n].sum(-1).tolist(), title=f"MambaLRP: {text}"))
        rows.append(TokenExplanation(tokens, ig_relevance[i, :n].sum(-1).tolist(), title=f"IG: {text}"))
    save_heatmap(rows, "quickstart_heatmap.png")
    with open("quickstart_heatmap.html", "w", encoding="utf-8") as page:
        page.write(heatmap_html(rows, "MambaLRP vs Integrated Gradients"))


if __name__ == "__main__":
    main()
