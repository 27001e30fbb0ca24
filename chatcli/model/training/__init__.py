"""What the model runs only while gradients flow: LoRA dropout (:mod:`.training.dropout_mask`), a packed group
with its trained adapters as one autograd node (:mod:`.lora_group`), and q/k/v+RoPE, SwiGLU and
RMSNorm with hand-written backward passes (:mod:`.fusions`). Nothing here imports the model: the
model's modules call in."""
