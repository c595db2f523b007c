// Lists drawn again from fresh data (a frame, a timer, a reload) keep the elements whose data did
// not change. Replaced, an element under the pointer between a button's press and its release
// takes no click: the browser sends none when the two land on different elements, and the
// agent's or supervisor's click was lost (a list redrawn every few seconds lost about one click
// in fifty).
//   parent  the list's element; its children are the items' elements, in order
//   items   the data, in display order
//   keyOf   an item's identity (a ticket id, a call's linkedid)
//   sigOf   a string that changes whenever the item's element must be drawn again
//   build   the element of an item
window.ctiRedraw = function (parent, items, keyOf, sigOf, build) {
  const old = new Map();
  for (const node of parent.children) if (node.dataset.key != null) old.set(node.dataset.key, node);
  const nodes = items.map((item) => {
    const key = String(keyOf(item)), sig = sigOf(item);
    const kept = old.get(key);
    if (kept && kept.dataset.sig === sig) return kept;
    const node = build(item);
    node.dataset.key = key; node.dataset.sig = sig;
    return node;
  });
  nodes.forEach((node, i) => { if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null); });
  while (parent.children.length > nodes.length) parent.lastChild.remove();
};
