"""What every benchmark question shares.

- runner: every timed thing in a process of its own (a contender, the user's CLI, an engine);
- contenders: the bare engine, the pipeline, HF transformers, Ray Data LLM, each embedding the
  same token ids (raydata_timing stamps Ray Data LLM's rows inside its engine stage);
- user_command: the user's command on a generated FASTA, timed from its manifest, against the
  bare engine, with the GPUs sampled (start-up, scale, whole genome);
- gpu: the one GPU sampler (utilisation and memory);
- report: versions, fidelity, the contenders' table and ratios, lanes merged into one table;
- shapes: the Genos shapes as random-weight models; workloads: the inputs, generated;
- profile, pyspy_summary: the bare engine's opt-in py-spy profile; serve_deps: Ray Serve's
  missing wheels on the GPU machine.
"""
