"""Probe a code organism's raw skill: given `Problem: <question>` and the start of a program (the
layout of its notebook documents), does it write a program that prints the right answer, and does
its `Answer:` line copy that output? Greedy, 16 test problems per task. Also: does it copy the
question itself (its copy documents' layout, `The same problem again:`; greedy = teacher-forced
argmax on every token), and, fed what its program really printed (one line, right or wrong) as the
```output block, does its `Answer:` line copy it?

    python scripts/code_probe.py MODEL_DIR sym/subset_count,sym/letters,bbh/multistep_arithmetic
"""
import sys, re, torch
torch.set_num_threads(1)
from transformers import AutoTokenizer, AutoModelForCausalLM
from reasonlab.tasks import get_task
from reasonlab.sandbox import Sandbox, SandboxConfig
m = sys.argv[1]; tok = AutoTokenizer.from_pretrained(m); model = AutoModelForCausalLM.from_pretrained(m).eval()
tasks = sys.argv[2].split(",")
with Sandbox(SandboxConfig(timeout_s=5)) as sb:
    for t in tasks:
        task = get_task(t); ps = task.problems("test", 16, seed=0); ok = prog_ok = q_ok = copied = fed = 0
        for p in ps:
            q = task.messages(p)[-1]['content'].strip()
            a = tok(f"Problem: {q}\nThe same problem again:").input_ids; b = tok(f" {q}\n").input_ids
            with torch.no_grad():
                pred = model(input_ids=torch.tensor([a + b])).logits[0, len(a) - 1:-1].argmax(-1).tolist()
            q_ok += pred == b
            prompt = f"Problem: {q}\n\n```python\n"
            ids = tok(prompt, return_tensors="pt").input_ids
            out = model.generate(ids, max_new_tokens=200, do_sample=False, pad_token_id=tok.pad_token_id)
            text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            code = text.split("```")[0]
            res = sb.run(code)
            printed = (res.stdout or "").strip()
            prog_ok += task.score(p, f"<answer>{printed}</answer>").correct
            ans = re.search(r"Answer: (.*)", text)
            ok += bool(ans) and task.score(p, f"<answer>{ans.group(1).strip()}</answer>").correct
            if printed and "\n" not in printed:  # fed the real output, does the Answer line copy it?
                ids2 = tok(prompt + code.rstrip() + f"\n```\n```output\n{printed}\n```\nAnswer:", return_tensors="pt").input_ids
                out2 = model.generate(ids2, max_new_tokens=60, do_sample=False, pad_token_id=tok.pad_token_id)
                copied += tok.decode(out2[0, ids2.shape[1]:], skip_special_tokens=True).split("\n")[0].strip() == printed
                fed += 1
        print(t, "program correct", prog_ok, "/16; answer line correct", ok, "/16; fed the real output, answer copies it",
              copied, "/", fed, "; question copied whole", q_ok, "/16", flush=True)
        if t == tasks[0]: print(text[:500])
