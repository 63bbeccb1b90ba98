import sys, numpy as np, dataclasses
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from evaluator.dataset import VocDataset
from model.engine import EngineConfig, Segmenter, get_config, mask_iou
from model.techniques import Technique as T
ds = VocDataset(str(__import__('pathlib').Path(__file__).resolve().parents[3] / 'shared' / 'voc2012' / 'VOC2012'))
seg = Segmenter(dataclasses.replace(EngineConfig(name='exp', cnn_max_side=320, cam_norm='box', crop_margin=0.05, grabcut_max_side=200, box_technique=T('fpf', 0.7), class_technique=T('pfpb', 0.3)), grabcut_max_side=128))
R=[]
for iid in ds.ids('train')[:205:2]:
    s=ds.load(iid); seg.set_image(s.image); v=s.valid
    for o in s.objects:
        gt=(s.object_mask==o.instance)&v
        h,w=gt.shape; x0,y0,x1,y1=o.box.clip(w,h); boxm=np.zeros_like(gt); boxm[y0:y1,x0:x1]=1
        ious=[mask_iou(seg.segment_box(o.box,o.name,t).mask&v,gt) for t in (T('fpf',0.7),T('grabcut'),T('cam',0.1))]
        fill=gt[y0:y1,x0:x1].mean()
        m=seg.segment_box(o.box,o.name,T('fpf',0.7)).mask
        R.append(ious+[mask_iou(boxm&v,gt), fill, m[y0:y1,x0:x1].mean(), (x1-x0)*(y1-y0)/(h*w), o.name])
a=np.array([r[:7] for r in R],float); names=[r[7] for r in R]
print('mean obj IoU fpf7 %.3f gc %.3f cam %.3f box %.3f oracle3 %.3f'%(*a[:,:4].mean(0), a[:,:3].max(1).mean()))
print('fpf7 IoU hist', np.histogram(a[:,0],bins=[0,.2,.4,.6,.8,.9,1.01])[0])
print('gt fill of box: mean %.2f'%a[:,4].mean(), 'pred fill mean %.2f'%a[:,5].mean())
bad=a[:,0]<0.4
print('bad n',bad.sum(),'pred fill of bad %.2f gt fill %.2f boxfrac %.2f'%(a[bad,5].mean(),a[bad,4].mean(),a[bad,6].mean()))
print('under-seg (pred fill < gt fill*0.6):', (a[:,5]<0.6*a[:,4]).sum(), ' over (pred>1.4gt):', (a[:,5]>1.4*a[:,4]).sum())
import collections; print(collections.Counter(n for n,b in zip(names,bad) if b))
# relation of fill to gt
print('corr pred fill vs gt fill %.2f'%np.corrcoef(a[:,5],a[:,4])[0,1])
