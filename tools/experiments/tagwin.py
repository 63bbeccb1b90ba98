import sys, time, numpy as np, dataclasses, cv2
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from evaluator.dataset import VocDataset
from evaluator.metrics import BinaryCounts
from model.engine import EngineConfig, Segmenter, get_config
from model.techniques import Technique, GC_BGD, GC_PR_BGD
from model.grabcut import foreground
from model import voc
ds = VocDataset(str(__import__('pathlib').Path(__file__).resolve().parents[3] / 'shared' / 'voc2012' / 'VOC2012'))
class S(Segmenter):
    margin=None
    def _cut(self, init, window, max_side):
        if window is None and self.margin is not None:
            ys,xs=np.nonzero(foreground(init))
            if len(ys):
                h,w=init.shape; x0,x1,y0,y1=xs.min(),xs.max()+1,ys.min(),ys.max()+1
                mx=int(self.margin*(x1-x0))+8; my=int(self.margin*(y1-y0))+8
                window=(max(0,x0-mx),max(0,y0-my),min(w,x1+mx),min(h,y1+my))
                init=init.copy(); out=np.zeros(init.shape,bool)
                m,fb=super()._cut(init, window, max_side)
                return m,fb
        return super()._cut(init, window, max_side)
segs={}
net=None
for name,m in (('whole',None),('win0.1',0.1),('win0.25',0.25),('win0.5',0.5)):
    s=S(EngineConfig(name='exp', cnn_max_side=320, cam_norm='box', crop_margin=0.05, grabcut_max_side=200, class_grabcut_max_side=300, class_exclusive=True, box_technique=Technique('fpf', 0.7), class_technique=Technique('pfpb', 0.3)), net=net); net=s.net; s.margin=m; segs[name]=s
counts={k:BinaryCounts.zeros() for k in segs}; tt={k:0. for k in segs}
for iid in ds.ids('train')[int(sys.argv[1]):205:2]:
    smp=ds.load(iid); cnn=None
    for k,s in segs.items(): cnn=s.set_image(smp.image,cnn)
    cl=smp.classes_present()
    for c in cl:
        gt=smp.class_mask==voc.voc_index(c)
        for k,s in segs.items():
            a=time.perf_counter(); m=s.segment_class(c, others=cl).mask; tt[k]+=time.perf_counter()-a
            counts[k].add(voc.voc_index(c)-1,m,gt,smp.valid)
for k,c in counts.items(): print(k,'%.1f'%(100*np.nanmean(c.iou()[c.seen])),'%.0f s'%tt[k])
