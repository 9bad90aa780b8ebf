fetch('/healthz').then(r => r.json()).then(s => {
  document.getElementById('status').textContent =
    s.status + (s.leader ? ', leader' : ', follower') + ', version ' + s.version + ', applied index ' + s.applied_index;
}).catch(() => { document.getElementById('status').textContent = 'unreachable'; });
