"""Random container names, docker's style (adjective_scientist; moby pkg/namesgenerator)."""

from __future__ import annotations

import os

_ADJ = ("admiring adoring affectionate agitated amazing angry awesome blissful bold boring brave busy "
        "charming clever cool compassionate competent condescending confident cranky crazy dazzling "
        "determined distracted dreamy eager ecstatic elastic elated elegant eloquent epic fervent "
        "festive flamboyant focused friendly frosty gallant gifted goofy gracious happy hardcore "
        "heuristic hopeful hungry infallible inspiring jolly jovial keen kind laughing loving lucid "
        "magical modest musing mystifying naughty nervous nice nifty nostalgic objective optimistic "
        "peaceful pedantic pensive practical priceless quirky quizzical relaxed reverent romantic sad "
        "serene sharp silly sleepy stoic strange stupefied suspicious sweet tender thirsty trusting "
        "upbeat vibrant vigilant vigorous wizardly wonderful xenodochial youthful zealous zen").split()
_NAMES = ("agnesi albattani allen almeida archimedes ardinghelli aryabhata austin babbage banach "
          "bardeen bartik bassi bell benz bhabha bhaskara blackwell bohr booth borg bose boyd brahmagupta "
          "brattain brown carson cerf chandrasekhar chatelet chaum clarke colden cori cray curie darwin "
          "davinci dijkstra dubinsky easley edison einstein elion engelbart euclid euler fermat fermi "
          "feynman franklin galileo gates goldberg goldstine golick goodall hamilton hawking heisenberg "
          "hermann hodgkin hoover hopper hugle hypatia jackson jang jennings jepsen johnson joliot "
          "jones kalam kare keller kepler khorana kilby kirch knuth kowalevski lalande lamarr leakey "
          "leavitt lederberg lehmann lewin lichterman liskov lovelace lumiere mahavira margulis "
          "matsumoto maxwell mayer mccarthy mcclintock mclean mcnulty meitner mendel mestorf mirzakhani "
          "morse moser murdock napier nash neumann newton nightingale nobel noether northcutt noyce "
          "panini pare pascal pasteur payne perlman pike poincare poitras ptolemy raman ramanujan "
          "ride ritchie robinson roentgen rosalind rubin saha sammet sanderson shamir shannon shaw "
          "shirley shockley sinoussi snyder spence stonebraker sutherland swanson swartz swirles "
          "taussig tesla tharp thompson torvalds turing varahamihira villani visvesvaraya volhard "
          "wescoff wiles williams wilson wing wozniak wright wu yalow yonath zhukovsky").split()


def random_name() -> str:
    a, b = int.from_bytes(os.urandom(4), "big"), int.from_bytes(os.urandom(4), "big")
    return f"{_ADJ[a % len(_ADJ)]}_{_NAMES[b % len(_NAMES)]}"
