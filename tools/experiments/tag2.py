import sys, time, numpy as np, dataclasses, cv2
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from evaluator.dataset import VocDataset
from evaluator.metrics import BinaryCounts
from model.engine import EngineConfig, Segmenter, get_config, normalise
from model.techniques import Thresholds, digitize, GC_PR_BGD, GC_PR_FGD, GC_FGD
from model.grabcut import has_both_sides, foreground
from model import voc
from model.techniques import Technique
ds = VocDataset(str(__import__('pathlib').Path(__file__).resolve().parents[3] / 'shared' / 'voc2012' / 'VOC2012'))
N,STEP,OFF,SIDE=int(sys.argv[1]),int(sys.argv[2]),int(sys.argv[3]),int(sys.argv[4])
seg = Segmenter(dataclasses.replace(EngineConfig(name='exp', cnn_max_side=320, cam_norm='box', crop_margin=0.05, grabcut_max_side=200, class_grabcut_max_side=300, class_exclusive=True, box_technique=Technique('fpf', 0.7), class_technique=Technique('pfpb', 0.3)), class_grabcut_max_side=SIDE))
vocset = set(i for c in voc.VOC_CLASSES for i in voc.imagenet_members(c))
nonvoc = np.array([i for i in range(1000) if i not in vocset])
def run(tag_cams, bg, c, mode, t, alpha):
    raw = tag_cams[c]
    cam,_ = normalise(raw)
    ok = np.ones_like(cam, bool)
    if 'excl' in mode:
        for o,r in tag_cams.items():
            if o!=c: ok &= raw >= r
    if 'bg' in mode:
        ok &= raw >= alpha*bg
    p = (cam >= t) & ok
    if 'cam' in mode: return p
    init = np.where(p, GC_PR_FGD, GC_PR_BGD).astype(np.uint8)
    if not has_both_sides(init): return p
    m,_ = seg._cut(init, None, SIDE); return m
grid = [(m,t,a) for m in ('gc','excl','bg','excl+bg','cam','cam+excl','cam+excl+bg') for t in (0.2,0.3,0.4) for a in ((0.5,1.0) if 'bg' in m else (0,))]
counts={g:BinaryCounts.zeros() for g in grid}
t0=time.time()
for iid in ds.ids('train')[OFF:N:STEP]:
    s=ds.load(iid); v=s.valid
    img = seg.set_image(s.image)
    logits, cam1000 = seg.net.forward(seg.image, seg.config.cnn_max_side)
    h,w = seg.image.shape[:2]
    bg = cv2.resize(cam1000[nonvoc].max(0), (w,h), interpolation=cv2.INTER_LINEAR).clip(min=0)
    classes = s.classes_present()
    tag_cams = {c: seg.raw_class_cam(c) for c in classes}
    for c in classes:
        gt = s.class_mask==voc.voc_index(c)
        for g in grid:
            counts[g].add(voc.voc_index(c)-1, run(tag_cams,bg,c,*g), gt, v)
print('%.0fs'%(time.time()-t0))
for g,c in sorted(counts.items(), key=lambda kv: -np.nanmean(kv[1].iou()[kv[1].seen])):
    print('%-12s t %.1f a %.1f  %.1f'%(*g, 100*np.nanmean(c.iou()[c.seen])))
