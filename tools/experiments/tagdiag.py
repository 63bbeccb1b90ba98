import sys, numpy as np, dataclasses
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from evaluator.dataset import VocDataset
from model.engine import EngineConfig, Segmenter, get_config, mask_iou
from model.techniques import Technique as T
from model import voc
ds = VocDataset(str(__import__('pathlib').Path(__file__).resolve().parents[3] / 'shared' / 'voc2012' / 'VOC2012'))
seg = Segmenter(dataclasses.replace(EngineConfig(name='exp', cnn_max_side=320, cam_norm='box', crop_margin=0.05, grabcut_max_side=200, box_technique=T('fpf', 0.7), class_technique=T('pfpb', 0.3)), class_grabcut_max_side=300))
tp=fp=fn=0; R=[]
for iid in ds.ids('train')[:205:2]:
    s=ds.load(iid); seg.set_image(s.image); v=s.valid
    for c in s.classes_present():
        gt=(s.class_mask==voc.voc_index(c))&v
        m=seg.segment_class(c).mask&v
        cam=seg.segment_class(c,T('cam',0.3)).mask&v
        a,b,d=(m&gt).sum(),(m&~gt).sum(),(~m&gt).sum(); tp+=a;fp+=b;fn+=d
        R.append((c, mask_iou(m,gt), mask_iou(cam,gt), gt.mean(), m.mean(), len(s.classes_present())))
print('TP %d FP %d FN %d  -> FP share %.2f'%(tp,fp,fn,fp/(fp+fn)))
a=np.array([r[1:] for r in R]); print('mean IoU gc %.3f cam %.3f; gt frac %.2f pred frac %.2f'%tuple(a[:,:4].mean(0)))
print('IoU hist', np.histogram(a[:,0],bins=[0,.1,.2,.4,.6,.8,1.01])[0])
print('single-class images IoU %.3f, multi %.3f'%(a[a[:,4]==1,0].mean(), a[a[:,4]>1,0].mean()))
print('empty preds', (a[:,3]==0).sum(), 'pred > 2x gt', (a[:,3]>2*a[:,2]).sum(), 'pred < 0.5 gt', (a[:,3]<0.5*a[:,2]).sum())
