"""Layout-faithful stand-ins for resamplers whose code ships only on the model hub (Qwen-VL's
and MiniCPM-V's visual.py / resampler.py, loaded with trust_remote_code), which cannot be
reached here: each has exactly its original's state-dict keys and forward, written here from
the published description, never copied."""
