"""What runs only while gradients flow: LoRA dropout (:mod:`.dropout_mask`), a packed group with its
trained adapters as one autograd node (:mod:`.lora_group`), q/k/v+RoPE, SwiGLU and RMSNorm with
hand-written backward passes (:mod:`.fusions`), and the allocator setting the training loops run
under (:mod:`.kept_heap`). Nothing here imports the model: the model's modules call in."""
