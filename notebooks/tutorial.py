# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # memlens tutorial: what does a small LSTM remember?
#
# We train a tiny LSTM language model on a synthetic corpus in which each verb agrees in
# number with a noun planted a fixed number of words earlier, then ask it three ways how far
# back it remembers:
#
# 1. **state gradients**: how strongly the state at time *t* still depends on the input
#    *τ* steps back;
# 2. **memory signature**: how well a linear decoder reads the input *τ* steps back out of
#    the state (held-out accuracy and bits);
# 3. **context ablation**: how much the model's loss grows when the context beyond *k* words
#    is shuffled, replaced or dropped.
#
# Everything here runs on a CPU in seconds (a weak model; the point is the calls).

# %%
# %matplotlib inline
import matplotlib.pyplot as plt

import memlens

DISTANCE = 3  # the planted memory: the verb agrees with the noun 3 words back
train_corpus = memlens.make_synthetic(300, distance=DISTANCE, seed=0)
heldout = memlens.make_synthetic(100, distance=DISTANCE, seed=1)
model = memlens.train(train_corpus=train_corpus, emb=8, hidden=16, epochs=1, optimizer="adam")

# %% [markdown]
# ## 1. State gradients
# `state_gradients` averages the exact Jacobians of the state with respect to past inputs,
# per delay. Displayed in Jupyter, a result is a table of its headline numbers and its
# first rows (and any trust warning); `to_frame()` gives the whole table as a DataFrame.

# %%
grads = memlens.state_gradients(model, train_corpus, max_delay=2 * DISTANCE)
grads

# %%
grads.plot()
plt.show()

# %% [markdown]
# ## 2. Memory signature
# A linear decoder per lag, trained on the states of one corpus and scored on held-out states.

# %%
signature = memlens.memory_signature(model, train_corpus, heldout, max_delay=2 * DISTANCE)
signature

# %%
signature.plot()
plt.show()
signature.to_frame()[["lag", "accuracy", "ci_low", "ci_high", "bits"]]

# %% [markdown]
# ## 3. Context ablation
# The loss increase when the context beyond *k* words is perturbed, over a 20-word window.

# %%
ablation = memlens.context_ablation(model, heldout, distances=[1, 2, DISTANCE, 2 * DISTANCE],
                                    context="window:20", targets=200)
ablation

# %%
ablation.plot()
plt.show()

# %% [markdown]
# Every result saves the same way (`result.save("dir")`: result.json, table.csv, the figures)
# and `memlens report dir1 dir2 ...` puts saved results into one HTML page. See the
# documentation for real corpora, your own models and Hugging Face models.
