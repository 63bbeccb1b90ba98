import sys, time, numpy as np, dataclasses, cv2
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from evaluator.dataset import VocDataset
from evaluator.metrics import BinaryCounts
from model.engine import EngineConfig, Segmenter, get_config, Box, CnnOutput
from model.grabcut import run_grabcut, has_both_sides, foreground, add_border_background
from model.techniques import Technique, GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD
from model import voc
ds = VocDataset(str(__import__('pathlib').Path(__file__).resolve().parents[3] / 'shared' / 'voc2012' / 'VOC2012'))
N = int(sys.argv[1]); STEP = int(sys.argv[2])

def guided(I, p, r, eps):
    # I: float32 guide HxW (grey) or HxWx3; p float32
    k=(2*r+1,2*r+1); bf=lambda x: cv2.boxFilter(x,-1,k,normalize=True,borderType=cv2.BORDER_REFLECT)
    if I.ndim==2:
        mI=bf(I); mp=bf(p); cIp=bf(I*p)-mI*mp; vI=bf(I*I)-mI*mI
        a=cIp/(vI+eps); b=mp-a*mI
        return bf(a)*I+bf(b)
    mI=[bf(I[...,c]) for c in range(3)]; mp=bf(p)
    cov=[bf(I[...,c]*p)-mI[c]*mp for c in range(3)]
    S=np.empty(p.shape+(3,3),np.float32)
    for i in range(3):
        for j in range(i,3):
            S[...,i,j]=S[...,j,i]=bf(I[...,i]*I[...,j])-mI[i]*mI[j]
    S+=eps*np.eye(3,dtype=np.float32)
    a=np.linalg.solve(S, np.stack(cov,-1)[...,None])[...,0]
    b=mp-(a*np.stack(mI,-1)).sum(-1)
    return (np.stack([bf(a[...,c]) for c in range(3)],-1)*I).sum(-1)+bf(b)

class Seg(Segmenter):
    space='rgb'; refine=None; post=None
    def _cut(self, init, window):
        h, w = init.shape
        wx0, wy0, wx1, wy1 = window or (0, 0, w, h)
        sub = init[wy0:wy1, wx0:wx1].copy()
        out = np.zeros((h, w), bool)
        if not has_both_sides(sub):
            out[wy0:wy1, wx0:wx1] = foreground(sub); return out, 'no_background'
        img = self.image[wy0:wy1, wx0:wx1]
        sh, sw = sub.shape
        scale = min(1.0, self.config.grabcut_max_side / max(sh, sw))
        size = (max(1, round(sw * scale)), max(1, round(sh * scale)))
        small_img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        if self.space=='lab': small_img = cv2.cvtColor(small_img, cv2.COLOR_RGB2LAB)
        if self.space=='blur': small_img = cv2.bilateralFilter(small_img, 5, 30, 5)
        small_init = cv2.resize(sub, size, interpolation=cv2.INTER_NEAREST)
        if not has_both_sides(small_init):
            m = run_grabcut(img, sub, 1)
        else:
            small = run_grabcut(small_img, small_init, self.config.grabcut_iterations).astype(np.float32)
            soft = cv2.resize(small, (sw, sh), interpolation=cv2.INTER_LINEAR)
            if self.refine:
                r, eps, col = self.refine
                rr = max(1, int(round(r / scale))) if scale<1 else r
                I = img.astype(np.float32)/255.
                soft = guided(I if col else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)/255., soft, rr, eps)
            m = soft > 0.5
            m[sub == GC_FGD] = True; m[sub == GC_BGD] = False
        if self.post=='cc':
            n, comp, st, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
            if n>2:
                big = 1+np.argmax(st[1:,cv2.CC_STAT_AREA])
                keep = [i for i in range(1,n) if st[i,cv2.CC_STAT_AREA] >= 0.1*st[big,cv2.CC_STAT_AREA] or np.any(sub[comp==i]==GC_FGD)]
                m = np.isin(comp, keep)
        if self.post=='holes':
            inv = (~m).astype(np.uint8); n, comp, st, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
            border = set(np.unique(np.concatenate([comp[0],comp[-1],comp[:,0],comp[:,-1]])))
            for i in range(1,n):
                if i not in border and st[i,cv2.CC_STAT_AREA] < 0.02*m.size: m[comp==i]=True
        out[wy0:wy1, wx0:wx1] = m
        return out, None

base = EngineConfig(name='exp', cnn_max_side=320, cam_norm='box', crop_margin=0.05, grabcut_max_side=200, class_grabcut_max_side=300, class_exclusive=True, box_technique=Technique('fpf', 0.7), class_technique=Technique('pfpb', 0.3))
net=None
def mk(name, side=128, space='rgb', refine=None, post=None, **kw):
    global net
    s = Seg(dataclasses.replace(base, grabcut_max_side=side, **kw), net=net); net = s.net
    s.space, s.refine, s.post = space, refine, post; return name, s
variants = dict([mk('rgb@128'), mk('rgb@200',200), mk('lab@128',space='lab'), mk('blur@128',space='blur'),
  mk('gf4g@128',refine=(4,1e-3,False)), mk('gf8g@128',refine=(8,1e-2,False)), mk('gf4c@128',refine=(4,1e-3,True)),
  mk('gf4c@200',200,refine=(4,1e-3,True)), mk('cc@128',post='cc'), mk('holes@128',post='holes'),
  mk('it2@128', grabcut_iterations=2), mk('m0@128', crop_margin=0.0), mk('m10@128', crop_margin=0.10)])
flip = 'flip' in sys.argv
counts = {k: BinaryCounts.zeros() for k in variants}
t0=time.time(); nobj=0; tt={k:0. for k in variants}
for iid in ds.ids('train')[:N:STEP]:
    s = ds.load(iid)
    cnn = None
    for k,sg in variants.items():
        cnn = sg.set_image(s.image, cnn)
    v = s.valid
    for o in s.objects:
        ci = voc.voc_index(o.name)-1; gt = s.object_mask==o.instance; nobj+=1
        for k,sg in variants.items():
            a=time.perf_counter(); m = sg.segment_box(o.box, o.name, Technique('fpf',0.7)).mask; tt[k]+=time.perf_counter()-a
            counts[k].add(ci, m, gt, v)
print('objects', nobj, '%.0fs'%(time.time()-t0))
for k,c in counts.items():
    iou = c.iou(); print('%-12s %.1f   %.1f ms/box'%(k, 100*np.nanmean(iou[c.seen]), 1e3*tt[k]/nobj))
