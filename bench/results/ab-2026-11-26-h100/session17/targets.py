import re,sys
def load(path):
    d={}
    for l in open(path):
        c=[x.strip() for x in l.split('|')]
        if len(c)>10 and re.match(r'\d+x\d+',c[1]):
            d[(c[1],c[2],int(c[3]),c[4],c[5])]=dict(us=float(c[6]),pct=float(c[8]),cub=float(c[9]),sp=float(c[10]))
    return d
def rng(v): return '%.0f-%.0f' % (min(v),max(v)) if v else '-'
def rngx(v): return '%.2f-%.2fx' % (min(v),max(v)) if v else '-'
# Usage: targets.py OLD_FP16.md OLD_BF16.md NEW_FP16.md NEW_BF16.md (each pair: one full benchmark run).
for tag,(f16,b16) in {'old: '+sys.argv[1]:sys.argv[1:3],'new: '+sys.argv[3]:sys.argv[3:5]}.items():
    a=load(f16); b=load(b16)
    shapes=sorted({k[0] for k in a}); large=[s for s in shapes if s!='4096x4096']
    print('==',tag)
    for M in (1,2,4,8,16,32):
        print(' M=%d large %%copy auto-pdl:'%M, rng([a[(s,'fp16',M,'4b-g128','auto-pdl')]['pct'] for s in large]),
              ' best-of-3:', rng([max(a[(s,'fp16',M,'4b-g128',k)]['pct'] for k in ('auto','auto-pdl','auto-pdl-early')) for s in large]))
    print(' 4096x4096 M<=16 %:', ' / '.join('%.0f'%a[('4096x4096','fp16',M,'4b-g128','auto-pdl')]['pct'] for M in (1,2,4,8,16)))
    for cfg in ('3b-g128','2b-g128'):
        print(' %s M=1 speedup large auto-pdl:'%cfg, rngx([a[(s,'fp16',1,cfg,'auto-pdl')]['sp'] for s in large]),
              ' early:', rngx([a[(s,'fp16',1,cfg,'auto-pdl-early')]['sp'] for s in large]))
    for M in (64,128):
        v={s:a[(s,'fp16',M,'4b-g128','auto-pdl')]['sp'] for s in shapes}
        print(' M=%d speedup vs cuBLAS (4b-g128 fp16 auto-pdl):'%M, rngx(list(v.values())), 'faster on %d of %d;'%(sum(x>=1 for x in v.values()),len(v)),
              'slower:', ', '.join('%s %.2f'%(s,x) for s,x in v.items() if x<1))
        vb={s:b[(s,'bf16',M,'4b-g128','auto-pdl')]['sp'] for s in shapes}
        print('   bf16:', rngx(list(vb.values())), 'slower:', ', '.join('%s %.2f'%(s,x) for s,x in vb.items() if x<1))
    r=[b[(k[0],'bf16')+k[2:]]['us']/a[k]['us'] for k in a if (k[0],'bf16')+k[2:] in b]
    print(' bf16/fp16 time: %.2f-%.2f over %d pairs; within 10%%: %d' % (min(r),max(r),len(r),sum(abs(x-1)<=0.10 for x in r)))
