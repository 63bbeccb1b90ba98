import sys, time, numpy as np, dataclasses, cv2, itertools
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from evaluator.dataset import VocDataset
from evaluator.metrics import BinaryCounts
from model.engine import EngineConfig, Segmenter, get_config, Box
from model.techniques import Technique
from model import voc
ds = VocDataset(str(__import__('pathlib').Path(__file__).resolve().parents[3] / 'shared' / 'voc2012' / 'VOC2012'))
N = int(sys.argv[1]); STEP = int(sys.argv[2]) if len(sys.argv)>2 else 1
base = EngineConfig(name='exp', cnn_max_side=320, cam_norm='box', crop_margin=0.05, grabcut_max_side=200, class_grabcut_max_side=300, class_exclusive=True, box_technique=Technique('fpf', 0.7), class_technique=Technique('pfpb', 0.3))
def S(**kw): return dataclasses.replace(base, **kw)
segs = {'gc200': Segmenter(S(grabcut_max_side=200))}
net = segs['gc200'].net
for k,c in {'gc128': S(grabcut_max_side=128), 'gc100': S(grabcut_max_side=100), 'gc160': S(grabcut_max_side=160)}.items():
    segs[k] = Segmenter(c, net=net)
T = Technique
cands = {
 'fpf7@200': ('gc200', T('fpf',0.7)), 'fpf7@160': ('gc160', T('fpf',0.7)), 'fpf7@128': ('gc128', T('fpf',0.7)), 'fpf7@100': ('gc100', T('fpf',0.7)),
 'gc@128': ('gc128', T('grabcut')), 'fpf5@128': ('gc128', T('fpf',0.5)), 'fpf85@128': ('gc128', T('fpf',0.85)),
 'cam1': ('gc128', T('cam',0.1)), 'cam3': ('gc128', T('cam',0.3)), 'fpb2@128': ('gc128', T('fpb',0.2)),
}
combos = {
 'vote(fpf7,gc,cam1)@128': ['fpf7@128','gc@128','cam1'],
 'vote(fpf5,fpf7,fpf85)@128': ['fpf5@128','fpf7@128','fpf85@128'],
 'vote(fpf7,gc,fpf5,cam3,fpb2)@128': ['fpf7@128','gc@128','fpf5@128','cam3','fpb2@128'],
 'vote(fpf7,gc,fpf5)@128': ['fpf7@128','gc@128','fpf5@128'],
}
counts = {k: BinaryCounts.zeros() for k in list(cands)+list(combos)}
t0=time.time(); nobj=0
for iid in ds.ids('train')[:N:STEP]:
    s = ds.load(iid)
    for k,sg in segs.items(): sg.set_image(s.image, segs['gc200'].cnn if k!='gc200' else None)
    v = s.valid
    for o in s.objects:
        ci = voc.voc_index(o.name)-1; gt = s.object_mask==o.instance; nobj+=1
        ms = {k: segs[sk].segment_box(o.box, o.name, t).mask for k,(sk,t) in cands.items()}
        for k,m in ms.items(): counts[k].add(ci, m, gt, v)
        for k,mem in combos.items():
            vote = np.mean([ms[x] for x in mem], axis=0) > 0.5
            counts[k].add(ci, vote, gt, v)
print('images', len(ds.ids('train')[:N:STEP]), 'objects', nobj, '%.0fs'%(time.time()-t0))
for k,c in counts.items():
    iou = c.iou(); print('%-36s %.1f'%(k, 100*np.nanmean(iou[c.seen])))
