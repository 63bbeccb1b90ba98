import sys, time, numpy as np, dataclasses, cv2, itertools
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from evaluator.dataset import VocDataset
from evaluator.metrics import BinaryCounts
from model.engine import EngineConfig, Segmenter, get_config
from model.techniques import Thresholds, digitize, GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD
from model.grabcut import foreground
from model import voc
from model.techniques import Technique
ds = VocDataset(str(__import__('pathlib').Path(__file__).resolve().parents[3] / 'shared' / 'voc2012' / 'VOC2012'))
N=int(sys.argv[1]); STEP=int(sys.argv[2]); side=int(sys.argv[3])
seg = Segmenter(dataclasses.replace(EngineConfig(name='exp', cnn_max_side=320, cam_norm='box', crop_margin=0.05, grabcut_max_side=200, class_grabcut_max_side=300, class_exclusive=True, box_technique=Technique('fpf', 0.7), class_technique=Technique('pfpb', 0.3)), grabcut_max_side=side))
def box_mask(o, th, strip, blur=False):
    img=seg.image; h,w=img.shape[:2]; x0,y0,x1,y1=o.box.clip(w,h)
    cam,ev = seg.class_cam(o.name,(x0,y0,x1,y1))
    init=np.full((h,w),GC_BGD,np.uint8)
    inside = digitize(cam[y0:y1,x0:x1], th) if ev else np.full((y1-y0,x1-x0),GC_PR_FGD,np.uint8)
    if strip>0:
        sy=max(1,int(round(strip*(y1-y0)))); sx=max(1,int(round(strip*(x1-x0))))
        ring=np.ones(inside.shape,bool); ring[sy:-sy or None, sx:-sx or None]=False
        inside[ring & (inside!=GC_FGD)] = GC_PR_BGD
    init[y0:y1,x0:x1]=inside
    if not foreground(inside).any(): init[y0:y1,x0:x1]=GC_PR_FGD
    m,_=seg._cut(init, seg._window(x0,y0,x1,y1))
    m[:y0]=0; m[y1:]=0; m[:,:x0]=0; m[:,x1:]=0
    return m
grid = [(t1,t2,st) for t1 in (0.01,0.1,0.2,0.3) for t2 in (0.6,0.7,0.8) for st in (0,0.03,0.06)]
counts={g:BinaryCounts.zeros() for g in grid}
t0=time.time()
for iid in ds.ids('train')[:N:STEP]:
    s=ds.load(iid); seg.set_image(s.image); v=s.valid
    for o in s.objects:
        ci=voc.voc_index(o.name)-1; gt=s.object_mask==o.instance
        for g in grid:
            counts[g].add(ci, box_mask(o, Thresholds(0.0,g[0],g[1]), g[2]), gt, v)
print('%.0fs'%(time.time()-t0))
res=sorted(((100*np.nanmean(c.iou()[c.seen]),g) for g,c in counts.items()), reverse=True)
for r,g in res: print('t1 %.2f t2 %.1f strip %.2f  %.1f'%(*g,r))
