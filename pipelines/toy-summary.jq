# Prints the two lines the toy demo reports from sae-eval's JSON.
"recovery of the \(.compare.d_sae) true features: mean best cosine \(.compare.compare_to_sae.mean * 1000 | round / 1000), matched at cosine > 0.9: \(.compare.compare_to_sae.fraction_matched * 100 | round)%",
"held-out reconstruction (\(.rows) rows): FVU \(.reconstruction.fvu * 10000 | round / 10000), L0 \(.sparsity.l0.mean * 100 | round / 100), dead latents \(.latents.dead)"
